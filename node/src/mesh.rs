//! Raft messages between members of the lock cluster, over the peer links,
//! forwarded by the nodes in between when two members have no direct link
//! (a chain A–B–C–D works).
//!
//! Routing is learned, not configured: a message goes over the direct
//! link when there is one; else over the link that last brought a new
//! message from its destination (the fastest path at that time); else it is
//! flooded to every link but the one it came on. Each node drops a message
//! it has already seen (by writer and number) and any that crossed
//! [`MAX_RAFT_HOPS`] links, so floods end. A message is carried, learned
//! from or answered only when it is between nodes this node trusts,
//! whoever forwarded it: links exist only with trusted peers, and a trusted
//! peer cannot speak for a stranger. It can speak for another trusted node
//! (the writer named in a forwarded message is not signed end to end):
//! trusted nodes are trusted with the lock table as a whole. A reply is
//! taken only from the node the request was for.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tandem_common::NodeId;
use tandem_common::proto::{
    ApiError, MAX_RAFT_HOPS, PeerAnswer, PeerMessage, PeerQuery, RaftEnvelope,
};
use tokio::sync::{Semaphore, oneshot};

use crate::links::{Answerer, Links};
use crate::raft::{
    Formation, MemberId, RaftLocks, RaftReply, RaftRequest, RaftTransport, TransportError,
};
use crate::trust::Trust;

/// Messages remembered per writer and number, to drop copies of a flood.
const SEEN: usize = 16_384;
/// Requests from other members answered at once; more wait their turn
/// (a member asks a few at a time; this bounds a misbehaving one).
const MAX_ANSWERING: usize = 256;
/// Peer questions (files, held changes) answered at once for other nodes.
const MAX_ANSWERING_QUERIES: usize = 16;

/// Calls waiting for their reply, by number: the node asked, and where to
/// hand the reply.
type Pending = HashMap<u64, (NodeId, oneshot::Sender<Vec<u8>>)>;

/// A message's identity for duplicate detection.
type Key = (NodeId, u64, bool);

#[derive(Default)]
struct Routes {
    /// Destination → the neighbour that last brought a new message from it.
    via: HashMap<NodeId, NodeId>,
    seen: HashSet<Key>,
    order: VecDeque<Key>,
}

impl Routes {
    /// Records `key`; false when it was seen before.
    fn first_sight(&mut self, key: Key) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > SEEN
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

/// This node's end of the lock cluster's message routing: a
/// [`RaftTransport`] for its Raft member, and the receiver of every
/// [`RaftEnvelope`] its links bring.
pub struct Mesh {
    me: NodeId,
    name: String,
    links: Links,
    trust: Trust,
    next: AtomicU64,
    /// Calls waiting for their reply: the node asked, and where to answer.
    pending: Mutex<Pending>,
    routes: Mutex<Routes>,
    raft: OnceLock<RaftLocks>,
    answerer: OnceLock<Arc<dyn Answerer>>,
    answering: Arc<Semaphore>,
    answering_queries: Arc<Semaphore>,
    /// When a message from each node last arrived here (for this node).
    heard: Mutex<HashMap<NodeId, Instant>>,
    /// Nodes whose direct link closed and that were not heard from since.
    gone: Mutex<HashSet<NodeId>>,
    /// Nodes a question found unreachable, and when (cleared by any
    /// message from them).
    unanswered: Mutex<HashMap<NodeId, Instant>>,
}

impl Mesh {
    /// Routing for node `me` over `links`, accepting members `trust` names.
    pub fn new(me: NodeId, name: String, links: Links, trust: Trust) -> Arc<Mesh> {
        Arc::new(Mesh {
            me,
            name,
            links,
            trust,
            // Numbers start at random: a peer that saw this node's
            // messages before it restarted must not take new ones for
            // copies of old ones.
            next: AtomicU64::new(uuid::Uuid::new_v4().as_u64_pair().0 >> 1),
            pending: Mutex::default(),
            routes: Mutex::default(),
            raft: OnceLock::new(),
            answerer: OnceLock::new(),
            answering: Arc::new(Semaphore::new(MAX_ANSWERING)),
            answering_queries: Arc::new(Semaphore::new(MAX_ANSWERING_QUERIES)),
            heard: Mutex::default(),
            gone: Mutex::default(),
            unanswered: Mutex::default(),
        })
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The trust this mesh accepts members by.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The links it routes over.
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// Connects the member that answers requests addressed to this node.
    pub fn attach(&self, raft: RaftLocks) {
        let _ = self.raft.set(raft);
    }

    /// Connects what answers peer questions addressed to this node.
    pub fn attach_answerer(&self, answerer: Arc<dyn Answerer>) {
        let _ = self.answerer.set(answerer);
    }

    /// Asks node `to` a peer question through the mesh (forwarded when
    /// there is no direct link).
    pub async fn query(
        self: &Arc<Self>,
        to: NodeId,
        q: PeerQuery,
        timeout: Duration,
    ) -> Result<PeerAnswer, String> {
        let r = self
            .clone()
            .call_inner(MemberId(to), RaftRequest::Query(q), timeout)
            .await;
        // Sent and never answered: the node is probably down. (Not sent,
        // for want of any link, says nothing about it.)
        if matches!(r, Err(TransportError::Timeout(..))) {
            self.unanswered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(to, Instant::now());
        }
        match r {
            Ok(RaftReply::Answer(a)) => a.map_err(|e| e.to_string()),
            Ok(_) => Err("answered with a reply of another kind".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether a question to `id` went unanswered within the last
    /// `within`, with nothing heard from it since (views skip it rather
    /// than wait for it again).
    pub fn unanswered_within(&self, id: NodeId, within: Duration) -> bool {
        self.unanswered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .is_some_and(|t| t.elapsed() < within)
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `env` one step towards `env.to`, never back to `came_from`.
    /// False when it went nowhere.
    fn route(&self, env: RaftEnvelope, came_from: Option<NodeId>) -> bool {
        self.route_via(env, came_from).is_some()
    }

    /// [`Mesh::route`], saying which link took it when it went straight to
    /// `env.to` (`Some(None)`: forwarded or flooded; `None`: nowhere).
    fn route_via(
        &self,
        env: RaftEnvelope,
        came_from: Option<NodeId>,
    ) -> Option<Option<Arc<crate::links::LinkHandle>>> {
        if let Some(link) = self.links.get(&env.to) {
            link.post(PeerMessage::Raft(env));
            return Some(Some(link));
        }
        let learned = self.routes().via.get(&env.to).copied();
        if let Some(next) = learned.filter(|n| Some(*n) != came_from) {
            if let Some(link) = self.links.get(&next) {
                link.post(PeerMessage::Raft(env));
                return Some(None);
            }
            self.routes().via.remove(&env.to);
        }
        let mut sent = false;
        for peer in self.links.peers() {
            if Some(peer) == came_from {
                continue;
            }
            if let Some(link) = self.links.get(&peer) {
                link.post(PeerMessage::Raft(env.clone()));
                sent = true;
            }
        }
        sent.then_some(None)
    }

    /// The link to `peer` closed: it is not taken for reachable (until a
    /// message from it comes another way), nor used as a route.
    pub fn link_closed(&self, peer: NodeId) {
        self.gone
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer);
        self.routes().via.retain(|_, via| *via != peer);
    }

    /// Handles an envelope brought by the link to `neighbour`.
    pub fn receive(self: &Arc<Self>, neighbour: NodeId, mut env: RaftEnvelope) {
        if env.from == self.me {
            return; // our own flood, come back around
        }
        // Only trusted nodes' messages are routed, learned from or
        // answered, and only towards trusted nodes: a trusted neighbour
        // cannot make this node carry (or remember routes for) strangers.
        if !self.trust.trusts(env.from) || (env.to != self.me && !self.trust.trusts(env.to)) {
            tracing::debug!(
                "dropped a lock-cluster message from {} to {} (forwarded by {neighbour}): not between trusted nodes",
                env.from,
                env.to
            );
            return;
        }
        if !self.routes().first_sight((env.from, env.id, env.reply)) {
            return;
        }
        self.routes().via.insert(env.from, neighbour);
        if env.to != self.me {
            env.hops = env.hops.saturating_add(1);
            if env.hops < MAX_RAFT_HOPS {
                self.route(env, Some(neighbour));
            }
            return;
        }
        self.heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(env.from, Instant::now());
        self.gone
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&env.from);
        self.unanswered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&env.from);
        if env.reply {
            let mut pending = self.pending();
            // Only the node asked may answer.
            if pending.get(&env.id).is_some_and(|(to, _)| *to == env.from)
                && let Some((_, tx)) = pending.remove(&env.id)
            {
                let _ = tx.send(env.body);
            }
            return;
        }
        let Some(raft) = self.raft.get().cloned() else {
            return; // not started yet: the asker times out and retries
        };
        let request: RaftRequest = match tandem_common::codec::decode(&env.body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(
                    "a lock-cluster request from {} does not decode ({e}); dropped",
                    env.from
                );
                return;
            }
        };
        // Bounded: a request that finds every slot taken is dropped (its
        // asker times out, as over a lossy link). Questions have slots of
        // their own, so slow ones never delay heartbeats and votes.
        let slots = if matches!(request, RaftRequest::Query(_)) {
            &self.answering_queries
        } else {
            &self.answering
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(
                "dropped a lock-cluster request from {}: too many being answered",
                env.from
            );
            return;
        };
        let mesh = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let reply = match request {
                // Forming a cluster needs what only the node knows.
                RaftRequest::Formation => RaftReply::Formation(Formation {
                    member: raft.is_member(),
                    trusted: mesh.trust.try_members().unwrap_or_default(),
                    name: mesh.name.clone(),
                }),
                RaftRequest::Query(q) => RaftReply::Answer(match mesh.answerer.get() {
                    Some(a) => a.answer(q).await,
                    None => Err(ApiError::Other("this node is starting".into())),
                }),
                request => raft.answer(MemberId(env.from), request).await,
            };
            let body = match tandem_common::codec::encode(&reply) {
                Ok(b) => b.to_vec(),
                Err(e) => {
                    tracing::warn!("cannot encode a lock-cluster reply: {e}");
                    return;
                }
            };
            mesh.route(
                RaftEnvelope {
                    id: env.id,
                    from: mesh.me,
                    to: env.from,
                    hops: 0,
                    reply: true,
                    body,
                },
                None,
            );
        });
    }

    async fn call_inner(
        self: Arc<Self>,
        to: MemberId,
        request: RaftRequest,
        timeout: Duration,
    ) -> Result<RaftReply, TransportError> {
        let body = tandem_common::codec::encode(&request)
            .map_err(|e| TransportError::Failed {
                to,
                reason: e.to_string(),
            })?
            .to_vec();
        let deadline = tokio::time::Instant::now() + timeout;
        let resend = changes_nothing(&request);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = oneshot::channel();
        self.pending().insert(id, (to.0, tx));
        let mut forget = Forget(&self, id);
        let mut env = RaftEnvelope {
            id,
            from: self.me,
            to: to.0,
            hops: 0,
            reply: false,
            body,
        };
        let Some(mut went_on) = self.route_via(env.clone(), None) else {
            return Err(TransportError::Unreachable(to));
        };
        // A link replaced by a newer one to the same node (both dialed at
        // once) drops what was in flight on it, the request or its reply:
        // a request that changes nothing is sent again, under a new number
        // (the node drops copies of one it has seen), over the link that
        // takes its place; at most a few times, within the same deadline.
        // A request that went through other nodes cannot see the links it
        // crossed: it is sent again when no reply came within a share of
        // the deadline (a node that forwards does not keep what it
        // forwarded).
        let mut resends = 0;
        let quiet = timeout / (MAX_RESENDS + 1);
        let mut quiet_until =
            (resend && went_on.is_none()).then(|| tokio::time::Instant::now() + quiet);
        let got = loop {
            let closed = went_on.clone().filter(|_| resend && resends < MAX_RESENDS);
            let replaced = async {
                match closed {
                    Some(old) => {
                        old.closed.cancelled().await;
                        self.links.wait_replaced(to.0, &old).await
                    }
                    None => std::future::pending().await,
                }
            };
            let silence = async {
                match quiet_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // A reply that is there wins over the deadline.
                biased;
                r = &mut rx => break r.ok(),
                () = tokio::time::sleep_until(deadline) => break None,
                link = replaced => {
                    resends += 1;
                    if !self.renumber(&mut env, &mut forget) {
                        // Answered meanwhile: `rx` has it.
                        went_on = None;
                        continue;
                    }
                    tracing::debug!(
                        "the link a {} request to {to} went out on was replaced before the reply; sent again",
                        request.kind(),
                    );
                    link.post(PeerMessage::Raft(env.clone()));
                    went_on = Some(link);
                }
                () = silence => {
                    resends += 1;
                    quiet_until = (resends < MAX_RESENDS)
                        .then(|| tokio::time::Instant::now() + quiet);
                    if !self.renumber(&mut env, &mut forget) {
                        continue;
                    }
                    tracing::debug!(
                        "no reply yet to a {} request to {to} sent through other nodes; sent again",
                        request.kind(),
                    );
                    // Over a direct link that came up meanwhile: from now on
                    // that link's replacement is watched too, as for a first
                    // send over it (the quiet time goes on: that link may
                    // close for good while the other route still works).
                    if let Some(Some(direct)) = self.route_via(env.clone(), None) {
                        went_on = Some(direct);
                    }
                }
            }
        };
        match got {
            Some(body) => {
                let reply: RaftReply =
                    tandem_common::codec::decode(&body).map_err(|e| TransportError::Failed {
                        to,
                        reason: format!("reply does not decode: {e}"),
                    })?;
                // Views name a node before the lock cluster does.
                match &reply {
                    RaftReply::Formation(f) => self.trust.learn_name(to.0, &f.name),
                    RaftReply::Answer(Ok(PeerAnswer::Status(st, _))) => {
                        self.trust.learn_name(to.0, &st.name)
                    }
                    _ => {}
                }
                Ok(reply)
            }
            None => Err(TransportError::Timeout(to, timeout)),
        }
    }
}

impl Mesh {
    /// Moves the waiter of `env` to a new number (what a request sent
    /// again is answered under); false when it was answered meanwhile.
    fn renumber(&self, env: &mut RaftEnvelope, forget: &mut Forget<'_>) -> bool {
        let next = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(waiter) = self.pending().remove(&env.id) else {
            return false;
        };
        self.pending().insert(next, waiter);
        forget.1 = next;
        env.id = next;
        true
    }
}

/// Forgets a call's waiter (under its latest number) however the call
/// ends.
struct Forget<'a>(&'a Mesh, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.pending().remove(&self.1);
    }
}

/// Times a request is sent again because the link it went out on closed
/// (or, through other nodes, because no reply came).
const MAX_RESENDS: u32 = 3;

/// Whether answering `request` changes nothing where it is answered, so
/// that sending it twice does no harm (see [`Mesh::call_inner`]). Raft's
/// own messages are left to Raft, which retries them itself.
fn changes_nothing(request: &RaftRequest) -> bool {
    match request {
        RaftRequest::Ping | RaftRequest::Formation => true,
        RaftRequest::AppendEntries(_)
        | RaftRequest::Vote(_)
        | RaftRequest::InstallSnapshot(_)
        | RaftRequest::Submit { .. } => false,
        RaftRequest::Query(q) => match q {
            PeerQuery::Files { .. }
            | PeerQuery::Status
            | PeerQuery::Ping
            | PeerQuery::Cache
            | PeerQuery::Held
            | PeerQuery::File { .. }
            | PeerQuery::Conflicts
            | PeerQuery::Versions { .. }
            | PeerQuery::OpenConflict { .. }
            | PeerQuery::ReadConflict { .. }
            | PeerQuery::Blocks { .. } => true,
            PeerQuery::ResolveConflict { .. } | PeerQuery::RestoreVersion { .. } => false,
        },
    }
}

/// The mesh as the Raft member's transport.
pub struct MeshTransport(pub Arc<Mesh>);

impl RaftTransport for MeshTransport {
    fn call(
        &self,
        to: MemberId,
        request: RaftRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RaftReply, TransportError>> {
        Box::pin(self.0.clone().call_inner(to, request, timeout))
    }

    fn heard_within(&self, member: MemberId, within: Duration) -> bool {
        let gone = self
            .0
            .gone
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&member.0);
        !gone && self.silent_for(member).is_some_and(|t| t <= within)
    }

    fn silent_for(&self, member: MemberId) -> Option<Duration> {
        self.0
            .heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&member.0)
            .map(Instant::elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::LinkHandle;

    /// The request a link was posted, as the far end would read it.
    async fn posted(rx: &mut tokio::sync::mpsc::UnboundedReceiver<PeerMessage>) -> RaftEnvelope {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(PeerMessage::Raft(env))) => env,
            other => panic!("expected a mesh message, got {other:?}"),
        }
    }

    /// A mesh of node `me` linked only to `middle`, which is the route to
    /// `far`: the ids, the links, the mesh, and what is posted to `middle`.
    fn through_middle() -> (
        tempfile::TempDir,
        [NodeId; 3],
        Links,
        Arc<Mesh>,
        tokio::sync::mpsc::UnboundedReceiver<PeerMessage>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (me, middle, far) = (NodeId::random(), NodeId::random(), NodeId::random());
        let links = Links::new(me);
        let trust = Trust::new(dir.path(), vec![middle, far]);
        let mesh = Mesh::new(me, "A".into(), links.clone(), trust);
        let (link, rx) = LinkHandle::detached(middle, me);
        assert!(links.register(link));
        mesh.routes().via.insert(far, middle);
        (dir, [me, middle, far], links, mesh, rx)
    }

    /// Asks `to` for its status through `mesh`, in the background.
    fn ask_status(
        mesh: &Arc<Mesh>,
        to: NodeId,
        secs: u64,
    ) -> tokio::task::JoinHandle<Result<PeerAnswer, String>> {
        let mesh = mesh.clone();
        tokio::spawn(async move {
            mesh.query(to, PeerQuery::Status, Duration::from_secs(secs))
                .await
        })
    }

    /// `from`'s reply `Pong` to the request numbered `id` of `to`.
    fn pong(id: u64, from: NodeId, to: NodeId) -> RaftEnvelope {
        RaftEnvelope {
            id,
            from,
            to,
            hops: 0,
            reply: true,
            body: tandem_common::codec::encode(&RaftReply::Answer(Ok(PeerAnswer::Pong)))
                .unwrap()
                .to_vec(),
        }
    }

    /// Both nodes dial at once and the second link replaces the first:
    /// a question in flight on the first is asked again on the second
    /// (under a new number, the only one answered), not left to time out.
    #[tokio::test]
    async fn a_question_on_a_replaced_link_is_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let (me, peer) = (NodeId::random(), NodeId::random());
        let links = Links::new(me);
        let trust = Trust::new(dir.path(), vec![peer]);
        let mesh = Mesh::new(me, "A".into(), links.clone(), trust);
        // The link dialed by the larger id is the one a second link
        // replaces (see `Links::register`).
        let (old, mut old_rx) = LinkHandle::detached(peer, me.max(peer));
        assert!(links.register(old.clone()));
        let asking = ask_status(&mesh, peer, 30);
        let first = posted(&mut old_rx).await;
        assert_eq!((first.to, first.reply), (peer, false));

        let (new, mut new_rx) = LinkHandle::detached(peer, me.min(peer));
        assert!(links.register(new.clone()));
        assert!(old.closed.is_cancelled(), "the first link is closed");
        let again = posted(&mut new_rx).await;
        assert_eq!((again.to, &again.body), (peer, &first.body));
        assert_ne!(again.id, first.id);
        {
            let pending = mesh.pending();
            assert!(
                pending.contains_key(&again.id),
                "waits under the new number"
            );
            assert!(!pending.contains_key(&first.id), "not under the old one");
        }

        let reply = |id| pong(id, peer, me);
        // A late reply to the first number is not taken; the second is.
        mesh.receive(peer, reply(first.id));
        assert!(
            mesh.pending().contains_key(&again.id),
            "a reply to the old number is not taken"
        );
        mesh.receive(peer, reply(again.id));
        let answer = tokio::time::timeout(Duration::from_secs(30), asking)
            .await
            .expect("answered")
            .unwrap();
        assert!(matches!(answer, Ok(PeerAnswer::Pong)), "{answer:?}");
        assert!(mesh.pending().is_empty(), "nothing left waiting");
    }

    /// A question that goes through another node (no link to the node
    /// asked) is sent again, under a new number, when no reply came within
    /// a share of its deadline: a link further on may have dropped it,
    /// which the asker cannot see. It stops after a few tries, and a
    /// question that changes something is never sent twice.
    #[tokio::test(start_paused = true)]
    async fn a_question_through_another_node_is_asked_again_when_unanswered() {
        let (_dir, [me, middle, far], _links, mesh, mut rx) = through_middle();
        let started = tokio::time::Instant::now();
        let asking = ask_status(&mesh, far, 8);
        // Lost on the way: only the asker's own clock sends it again.
        let first = posted(&mut rx).await;
        assert_eq!((first.to, first.reply), (far, false));
        let again = posted(&mut rx).await;
        assert_eq!(started.elapsed(), Duration::from_secs(2), "after a quarter");
        assert_eq!(again.body, first.body);
        assert_ne!(again.id, first.id);
        mesh.receive(middle, pong(again.id, far, me));
        let answer = asking.await.unwrap();
        assert!(matches!(answer, Ok(PeerAnswer::Pong)), "{answer:?}");
        assert!(mesh.pending().is_empty(), "nothing left waiting");

        // Never answered: a few tries, then the deadline.
        let started = tokio::time::Instant::now();
        let answer = ask_status(&mesh, far, 8).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(8), "at its deadline");
        assert!(answer.is_err(), "{answer:?}");
        let mut sent = 0;
        while rx.try_recv().is_ok() {
            sent += 1;
        }
        assert_eq!(
            sent,
            1 + MAX_RESENDS as usize,
            "the first try and the resends"
        );
        assert!(mesh.pending().is_empty(), "nothing left waiting");

        // A question that changes something goes once.
        let restore = PeerQuery::RestoreVersion {
            id: "x".into(),
            by: "someone".into(),
        };
        let asking = tokio::spawn({
            let mesh = mesh.clone();
            async move { mesh.query(far, restore, Duration::from_secs(8)).await }
        });
        assert!(asking.await.unwrap().is_err());
        let mut sent = 0;
        while rx.try_recv().is_ok() {
            sent += 1;
        }
        assert_eq!(sent, 1, "sent once");
    }

    /// A question sent through another node and sent again over a direct
    /// link that came up meanwhile: when that link is then replaced, it is
    /// sent again over the new one at once (as if it had first gone out
    /// there); when it closes for good, through the other node again after
    /// the next quiet time.
    #[tokio::test(start_paused = true)]
    async fn a_question_asked_again_over_a_new_direct_link_follows_its_replacement() {
        let (_dir, [me, middle, far], links, mesh, mut via_rx) = through_middle();
        let asking = ask_status(&mesh, far, 8);
        let first = posted(&mut via_rx).await;
        // A direct link comes up; the quiet time sends it there.
        let (direct, mut direct_rx) = LinkHandle::detached(far, me);
        assert!(links.register(direct.clone()));
        let again = posted(&mut direct_rx).await;
        assert_ne!(again.id, first.id);
        // That link is replaced before the reply: sent on the new one at
        // once, not after another quarter of silence.
        let at = tokio::time::Instant::now();
        direct.closed.cancel();
        links.unregister(&direct);
        let (newer, mut newer_rx) = LinkHandle::detached(far, me);
        assert!(links.register(newer.clone()));
        let third = posted(&mut newer_rx).await;
        assert_eq!(at.elapsed(), Duration::ZERO, "at once");
        assert_ne!(third.id, again.id);
        mesh.receive(far, pong(third.id, far, me));
        let answer = asking.await.unwrap();
        assert!(matches!(answer, Ok(PeerAnswer::Pong)), "{answer:?}");
        assert!(mesh.pending().is_empty(), "nothing left waiting");

        // The direct link closes for good: the quiet time still sends it
        // again, through the other node.
        newer.closed.cancel();
        links.unregister(&newer);
        mesh.routes().via.insert(far, middle);
        let asking = ask_status(&mesh, far, 8);
        posted(&mut via_rx).await;
        let (direct, mut direct_rx) = LinkHandle::detached(far, me);
        assert!(links.register(direct.clone()));
        posted(&mut direct_rx).await;
        let at = tokio::time::Instant::now();
        direct.closed.cancel();
        links.unregister(&direct);
        mesh.routes().via.insert(far, middle);
        let last = posted(&mut via_rx).await;
        assert_eq!(
            at.elapsed(),
            Duration::from_secs(2),
            "after another quarter"
        );
        mesh.receive(middle, pong(last.id, far, me));
        let answer = asking.await.unwrap();
        assert!(matches!(answer, Ok(PeerAnswer::Pong)), "{answer:?}");
    }

    /// A node whose link closes for good (links to it come and go, none
    /// stays): the question ends at its deadline, with nothing left
    /// waiting, rather than being asked again and again.
    #[tokio::test(start_paused = true)]
    async fn a_question_to_a_node_that_stays_down_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let (me, peer) = (NodeId::random(), NodeId::random());
        let links = Links::new(me);
        let mesh = Mesh::new(
            me,
            "A".into(),
            links.clone(),
            Trust::new(dir.path(), vec![peer]),
        );
        let (old, mut old_rx) = LinkHandle::detached(peer, me);
        assert!(links.register(old.clone()));
        let started = tokio::time::Instant::now();
        let asking = tokio::spawn({
            let mesh = mesh.clone();
            async move {
                mesh.query(peer, PeerQuery::Status, Duration::from_secs(5))
                    .await
            }
        });
        posted(&mut old_rx).await;
        old.closed.cancel();
        links.unregister(&old);
        let mut resent = 0;
        for _ in 0..5 {
            let (brief, mut rx) = LinkHandle::detached(peer, me);
            assert!(links.register(brief.clone()));
            if rx.try_recv().is_ok() {
                resent += 1;
            }
            tokio::task::yield_now().await;
            while rx.try_recv().is_ok() {
                resent += 1;
            }
            brief.closed.cancel();
            links.unregister(&brief);
            tokio::task::yield_now().await;
        }
        let answer = asking.await.unwrap();
        assert!(
            answer.as_ref().is_err_and(|e| e.contains("no reply")),
            "{answer:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5), "at its deadline");
        assert!(resent <= MAX_RESENDS as usize, "{resent} resends");
        assert!(mesh.pending().is_empty(), "nothing left waiting");
    }

    #[test]
    fn only_questions_that_change_nothing_are_asked_twice() {
        let q = |q| RaftRequest::Query(q);
        assert!(changes_nothing(&q(PeerQuery::Status)));
        assert!(changes_nothing(&RaftRequest::Formation));
        let restore = PeerQuery::RestoreVersion {
            id: "x".into(),
            by: "someone".into(),
        };
        assert!(!changes_nothing(&q(restore)));
    }

    #[test]
    fn copies_are_seen_once_and_memory_is_bounded() {
        let mut r = Routes::default();
        let a = NodeId::random();
        assert!(r.first_sight((a, 1, false)));
        assert!(!r.first_sight((a, 1, false)));
        assert!(r.first_sight((a, 1, true)), "a reply is not its request");
        for i in 2..(SEEN as u64 + 10) {
            r.first_sight((a, i, false));
        }
        assert!(r.seen.len() <= SEEN && r.order.len() <= SEEN);
        assert!(r.first_sight((a, 1, false)), "long forgotten");
    }
}
