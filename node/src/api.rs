//! Incoming connections: TLS (both keys proven), then the judgement of who
//! it is (an untrusted node is refused before any message is read), the
//! hello, and a peer link or a client session whose every request is
//! checked against the client's role. Anything malformed closes that one
//! connection with a log line; the node keeps serving everyone else.
//! Connections are capped in total and per kind.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tandem_common::NodeId;
use tandem_common::RelPath;
use tandem_common::codec::{FrameIo, FrameReader, FrameWriter};
use tandem_common::proto::{
    self, ApiError, ClientInfo, ClientRequest, ClientResponse, Event, EventKind, HandshakeError,
    Hello, HelloReply, NodeToClient, PROTOCOL_VERSION, Refusal, Request, Role,
};
use tandem_common::proto::{Access, ConflictAction, ConflictResolution, IdentityRecord};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::core::{CoreHandle, LockMsg};
use tandem_common::ContentHash;
use tandem_common::proto::{OpenedCopy, PeerAnswer, PeerQuery};

/// How long a new connection has for TLS and hello together.
const HELLO_TIMEOUT: Duration = crate::peer::HANDSHAKE_TIMEOUT;
/// Connections open at once, of any kind (further ones are closed at once).
pub const MAX_CONNECTIONS: usize = 512;
/// Peer links at once.
pub const MAX_PEER_CONNECTIONS: usize = 64;
/// Client connections at once.
pub const MAX_CLIENT_CONNECTIONS: usize = 256;
/// Connections of clients without a role at once (they can only register).
pub const MAX_STRANGER_CONNECTIONS: usize = 16;
/// Largest frame a client without a role may send.
const STRANGER_MAX_FRAME: usize = 64 * 1024;
/// Rows per `Files` frame, keeping each well under the frame limit.
const LIST_CHUNK: usize = 4096;

/// What every connection task needs.
#[derive(Clone)]
pub struct Ctx {
    /// The core.
    pub core: CoreHandle,
    /// This node's id.
    pub node_id: NodeId,
    /// This node's name.
    pub name: String,
    /// What peer links need.
    pub peer: crate::peer::PeerCtx,
    /// The configured peers.
    pub configured: Vec<crate::config::PeerSpec>,
    /// Live client sessions.
    pub clients: Clients,
    /// The live feed.
    pub events: Arc<crate::events::EventBus>,
    /// Figures.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Files served to clients.
    pub cache: Arc<crate::cache::FileCache>,
    /// Answers about this node.
    pub answerer: Arc<crate::cluster::NodeAnswerer>,
    /// Where uploads are written before they are put in place.
    pub tmp_dir: std::path::PathBuf,
    /// Client identities and roles.
    pub identities: crate::access::Identities,
    /// This node's invite codes.
    pub invites: Arc<crate::access::Invites>,
    /// Idle client connections are closed after this long.
    pub idle_timeout: Duration,
    /// Open connections, by kind.
    pub conns: Conns,
    /// The lock cluster.
    pub locks: Arc<crate::lock_service::LockService>,
    /// The synced folder.
    pub root: std::path::PathBuf,
    /// The state folder.
    pub state_dir: std::path::PathBuf,
    /// The ignore patterns in force.
    pub ignores: crate::ignores::SharedIgnores,
}

/// Counts of open connections, by kind, for the caps.
#[derive(Clone, Default)]
pub struct Conns {
    total: Arc<std::sync::atomic::AtomicUsize>,
    peers: Arc<std::sync::atomic::AtomicUsize>,
    clients: Arc<std::sync::atomic::AtomicUsize>,
    strangers: Arc<std::sync::atomic::AtomicUsize>,
}

/// One taken place under a cap; given back when dropped.
pub struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

fn take_slot(counter: &Arc<std::sync::atomic::AtomicUsize>, limit: usize) -> Option<Slot> {
    use std::sync::atomic::Ordering;
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(counter.clone()))
}

impl Conns {
    /// A place for a new connection of any kind, if the total allows.
    pub fn any(&self) -> Option<Slot> {
        take_slot(&self.total, MAX_CONNECTIONS)
    }
}

/// The node's live clients, by connection.
#[derive(Clone, Default)]
pub struct Clients {
    map: Arc<Mutex<HashMap<u64, ClientInfo>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl Clients {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ClientInfo>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, info: ClientInfo) -> u64 {
        let k = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().insert(k, info);
        k
    }

    /// The name a live client with this id uses.
    fn name_of(&self, id: &Uuid) -> Option<String> {
        self.lock()
            .values()
            .find(|c| c.id.as_ref() == Some(id))
            .map(|c| c.name.clone())
    }

    fn remove(&self, k: u64) {
        self.lock().remove(&k);
    }

    /// Every live client, oldest first.
    pub fn list(&self) -> Vec<ClientInfo> {
        let mut v: Vec<ClientInfo> = self.lock().values().cloned().collect();
        v.sort_by_key(|c| c.since_ns);
        v
    }
}

/// Serves one accepted connection until it closes. `slot` is its place
/// under the total cap.
pub async fn serve_connection(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    ctx: Ctx,
    slot: Slot,
) {
    let accepted = tokio::time::timeout(HELLO_TIMEOUT, ctx.peer.tls.accept(stream)).await;
    let (tls, id, side) = match accepted {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::warn!(
                "closing connection from {addr}: TLS handshake failed ({e}); an older Tandem or not Tandem at all"
            );
            return;
        }
        Err(_) => {
            tracing::warn!(
                "closing connection from {addr}: no TLS handshake within {HELLO_TIMEOUT:?}"
            );
            return;
        }
    };
    let mut io = FrameIo::new(tls);
    match side {
        tandem_common::tls::Side::Peer => serve_peer(io, addr, NodeId(id), ctx, slot).await,
        tandem_common::tls::Side::Client => {
            // Not trusted yet: small frames until the client has a role.
            if ctx.identities.role(&id).is_none() {
                io.set_max_frame(STRANGER_MAX_FRAME);
            }
            serve_client(io, addr, id, ctx, slot).await
        }
    }
}

async fn refuse<S>(io: &mut FrameIo<S>, why: Refusal)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Ok(frame) = proto::encode_hello(&HelloReply::Refused(why)) {
        let _ = tokio::time::timeout(Duration::from_secs(2), io.send_raw(frame)).await;
    }
    // What the other side sent meanwhile (its hello, a peer's `Resume`) is
    // read before closing, for a moment: a close with unread data resets
    // the connection, and the reset can overtake the refusal.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(Some(_)) = io.recv_raw().await {}
    })
    .await;
}

/// A place under the cap `(counter, limit, kind)`, or a `Busy` refusal sent
/// and logged.
async fn slot_or_refuse<S>(
    io: &mut FrameIo<S>,
    ctx: &Ctx,
    addr: SocketAddr,
    (counter, limit, what): (&Arc<std::sync::atomic::AtomicUsize>, usize, &str),
) -> Option<Slot>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(slot) = take_slot(counter, limit) {
        return Some(slot);
    }
    tracing::warn!("refused a {what} connection from {addr}: {limit} open already");
    refuse(
        io,
        Refusal::Busy {
            node: ctx.name.clone(),
            what: what.into(),
            limit: limit as u32,
        },
    )
    .await;
    None
}

async fn serve_peer<S>(mut io: FrameIo<S>, addr: SocketAddr, peer: NodeId, ctx: Ctx, _slot: Slot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Judged on the proven key alone, before reading anything it sent.
    if peer == ctx.node_id {
        refuse(&mut io, Refusal::SelfConnection).await;
        return;
    }
    if !ctx.peer.trust.trusts(peer) {
        tracing::warn!(
            "refused node {peer} connecting from {addr}: it is not trusted; to trust it run: {}",
            ctx.peer.trust.command_for(&ctx.peer.dir, peer)
        );
        refuse(
            &mut io,
            Refusal::NotTrusted {
                node: ctx.name.clone(),
                id: peer,
            },
        )
        .await;
        return;
    }
    let cap = (&ctx.conns.peers, MAX_PEER_CONNECTIONS, "peer");
    let Some(_kind) = slot_or_refuse(&mut io, &ctx, addr, cap).await else {
        return;
    };
    let hello = match tokio::time::timeout(
        HELLO_TIMEOUT,
        read_hello(&mut io, &ctx, Role::Peer, None),
    )
    .await
    {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            tracing::warn!("closing link from node {peer} at {addr}: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!(
                "closing link from node {peer} at {addr}: no hello within {HELLO_TIMEOUT:?}"
            );
            return;
        }
    };
    crate::peer::run_link(io, peer, hello.name, peer, ctx.peer.clone(), None).await;
}

async fn serve_client<S>(mut io: FrameIo<S>, addr: SocketAddr, id: Uuid, ctx: Ctx, _slot: Slot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cap = if ctx.identities.role(&id).is_none() {
        (
            &ctx.conns.strangers,
            MAX_STRANGER_CONNECTIONS,
            "not-yet-approved client",
        )
    } else {
        (&ctx.conns.clients, MAX_CLIENT_CONNECTIONS, "client")
    };
    let Some(_kind) = slot_or_refuse(&mut io, &ctx, addr, cap).await else {
        return;
    };
    let hello = match tokio::time::timeout(
        HELLO_TIMEOUT,
        read_hello(&mut io, &ctx, Role::Client, Some((id, addr))),
    )
    .await
    {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            tracing::warn!("closing connection from {addr}: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!("closing connection from {addr}: no hello within {HELLO_TIMEOUT:?}");
            return;
        }
    };
    let id_text = tandem_common::identity::format_id(&id);
    tracing::info!(
        "client {:?} ({id_text}, role {}) connected from {addr}",
        hello.name,
        ctx.identities.role(&id).map_or("none", |r| r.as_str())
    );
    let key = ctx.clients.add(ClientInfo {
        id: Some(id),
        name: hello.name.clone(),
        addr: addr.to_string(),
        since_ns: crate::core::now_ns(),
    });
    let session = Session {
        id,
        id_text,
        name: hello.name.clone(),
        last_seq: 0,
    };
    ctx.events.emit(EventKind::ClientConnected {
        name: hello.name.clone(),
        addr: addr.to_string(),
    });
    crate::metrics::Metrics::add(&ctx.metrics.clients, 1);
    let res = client_session(io, &ctx, session).await;
    ctx.metrics
        .clients
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    ctx.clients.remove(key);
    ctx.events.emit(EventKind::ClientDisconnected {
        name: hello.name.clone(),
        addr: addr.to_string(),
    });
    match res {
        Ok(()) => tracing::info!("client {:?} from {addr} disconnected", hello.name),
        Err(e) => tracing::warn!("closing client {:?} from {addr}: {e}", hello.name),
    }
}

/// Reads the hello, checks version, role and name, and welcomes. For a
/// client (`client` = its id and address) the welcome says its role; the
/// first client over loopback of a node that knows no client becomes admin.
async fn read_hello<S>(
    io: &mut FrameIo<S>,
    ctx: &Ctx,
    role: Role,
    client: Option<(Uuid, SocketAddr)>,
) -> Result<Hello, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = io.recv_raw().await?.ok_or(HandshakeError::Closed)?;
    let (version, hello) = proto::decode_hello::<Hello>(&frame)?;
    let Some(hello) = hello else {
        let refusal = Refusal::VersionMismatch {
            node: PROTOCOL_VERSION,
            theirs: version,
        };
        refuse(io, refusal.clone()).await;
        return Err(HandshakeError::Refused(refusal));
    };
    let bad = if hello.role != role {
        Some("the hello names another role than the TLS handshake".to_string())
    } else if hello.name.len() > proto::MAX_NAME || hello.name.trim().is_empty() {
        Some(format!(
            "names must be 1 to {} bytes (this one has {})",
            proto::MAX_NAME,
            hello.name.len()
        ))
    } else {
        None
    };
    if let Some(why) = bad {
        let refusal = Refusal::BadHello(why);
        refuse(io, refusal.clone()).await;
        return Err(HandshakeError::Refused(refusal));
    }
    let client = client.map(|(id, addr)| {
        if ctx.identities.role(&id).is_none() && addr.ip().is_loopback() {
            let rec = IdentityRecord {
                id,
                name: hello.name.clone(),
                role: Some(Access::Admin),
                changed_ns: crate::core::now_ns(),
                by: "first client over loopback".into(),
            };
            if ctx.identities.claim_first(rec.clone()) {
                tracing::warn!(
                    "client {:?} ({}) is the first client of this node and connected over loopback: it is admin",
                    hello.name,
                    tandem_common::identity::format_id(&id)
                );
                ctx.core.tell_lock(LockMsg::Identity(rec));
            }
        }
        (id, ctx.identities.role(&id))
    });
    let reply = HelloReply::Welcome {
        node_id: ctx.node_id,
        name: ctx.name.clone(),
        client,
    };
    io.send_raw(proto::encode_hello(&reply)?).await?;
    Ok(hello)
}

/// Errors that end a client session.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Codec(#[from] tandem_common::codec::CodecError),
    #[error("idle for {0:?} (nothing asked, no feed followed)")]
    Idle(Duration),
    #[error("the client left while waiting for a lock")]
    LeftWaiting,
}

/// Who is on the other end of a client connection (its key is proven).
struct Session {
    /// Its id.
    id: Uuid,
    /// The id's text form.
    id_text: String,
    /// Its display name.
    name: String,
    /// Last feed sequence sent.
    last_seq: u64,
}

async fn client_session<S>(
    io: FrameIo<S>,
    ctx: &Ctx,
    mut session: Session,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut w, mut r) = io.split();
    let mut feed: Option<broadcast::Receiver<Arc<Event>>> = None;
    let idle = tokio::time::sleep(ctx.idle_timeout);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            req = r.recv::<Request>() => {
                let Some(req) = req? else { return Ok(()) };
                idle.as_mut().reset(tokio::time::Instant::now() + ctx.idle_timeout);
                handle_request(&mut w, &mut r, ctx, &mut session, &mut feed, req).await?;
                let max = if ctx.identities.role(&session.id).is_some() {
                    tandem_common::codec::MAX_FRAME
                } else {
                    STRANGER_MAX_FRAME
                };
                r.set_max_frame(max);
            }
            // A client following the feed is never idle.
            () = &mut idle, if feed.is_none() => {
                return Err(SessionError::Idle(ctx.idle_timeout));
            }
            ev = next_event(&mut feed) => match ev {
                Ok(e) => {
                    session.last_seq = e.seq;
                    w.send(&NodeToClient::Event(Arc::unwrap_or_clone(e))).await?;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let from = session.last_seq + 1;
                    session.last_seq += n;
                    w.send(&NodeToClient::Missed {
                        epoch: ctx.events.epoch(),
                        from,
                        to: from + n,
                    })
                    .await?;
                }
                Err(broadcast::error::RecvError::Closed) => feed = None,
            }
        }
    }
}

async fn next_event(
    feed: &mut Option<broadcast::Receiver<Arc<Event>>>,
) -> Result<Arc<Event>, broadcast::error::RecvError> {
    match feed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn handle_request<S>(
    w: &mut FrameWriter<S>,
    r: &mut FrameReader<S>,
    ctx: &Ctx,
    session: &mut Session,
    feed: &mut Option<broadcast::Receiver<Arc<Event>>>,
    req: Request,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let role = ctx.identities.role(&session.id);
    if let Some(need) = crate::access::required(&req.body)
        && role < Some(need)
    {
        let e = ApiError::NotAuthorized {
            id: session.id_text.clone(),
            have: role,
            need,
            what: crate::access::request_name(&req.body).to_string(),
        };
        if let ClientRequest::Put { .. } = req.body {
            // Its data frames follow: read them so the connection stays in step.
            drain_upload(r).await?;
        }
        return send(w, req.id, ClientResponse::Error(e)).await;
    }
    let body = match req.body {
        ClientRequest::List => {
            let names = |id| ctx.locks.name_of(id);
            let mesh = &ctx.peer.mesh;
            match crate::cluster::MergedList::open(&ctx.core, mesh, &names, &ctx.name).await {
                Ok(table) => return send_table(w, req.id, table).await,
                Err(e) => ClientResponse::Error(e),
            }
        }
        ClientRequest::Register { code } => {
            use crate::access::InviteError;
            match ctx.invites.redeem(&code, std::time::Instant::now()) {
                Ok(granted) => {
                    let role = role.map_or(granted, |r| r.max(granted));
                    let rec = IdentityRecord {
                        id: session.id,
                        name: session.name.clone(),
                        role: Some(role),
                        changed_ns: crate::core::now_ns(),
                        by: "an invite code".into(),
                    };
                    ctx.identities.merge(rec.clone());
                    ctx.core.tell_lock(LockMsg::Identity(rec));
                    ClientResponse::Registered { role }
                }
                Err(InviteError::RateLimited(secs)) => ClientResponse::Error(ApiError::RateLimited {
                    what: "registration attempts".into(),
                    retry_secs: secs,
                }),
                Err(_) => ClientResponse::Error(ApiError::BadInvite(
                    "no such code on this node (codes work once, for 24 hours, on the node that made them)".into(),
                )),
            }
        }
        ClientRequest::Approve { id, role: new } => {
            if id == session.id && new < Some(Access::Admin) {
                ClientResponse::Error(ApiError::Other(
                    "you cannot lower your own role (another admin can)".into(),
                ))
            } else {
                let name = ctx
                    .clients
                    .name_of(&id)
                    .or_else(|| {
                        ctx.identities
                            .all()
                            .into_iter()
                            .find(|r| r.id == id)
                            .map(|r| r.name)
                    })
                    .unwrap_or_else(|| "(not seen yet)".into());
                let rec = IdentityRecord {
                    id,
                    name,
                    role: new,
                    changed_ns: crate::core::now_ns(),
                    by: session.name.clone(),
                };
                ctx.identities.merge(rec.clone());
                ctx.core.tell_lock(LockMsg::Identity(rec.clone()));
                ClientResponse::Approved(rec)
            }
        }
        ClientRequest::Invite { role: r } => match ctx.invites.make(r, std::time::Instant::now()) {
            Ok(code) => ClientResponse::Invited {
                code,
                expires_ns: crate::core::now_ns()
                    + crate::access::INVITE_LIFETIME.as_nanos() as i64,
            },
            Err(_) => ClientResponse::Error(ApiError::Other(
                "too many unused invite codes on this node; wait for some to expire".into(),
            )),
        },
        ClientRequest::Identities => ClientResponse::IdentityList(ctx.identities.all()),
        ClientRequest::Lock { path, wait } => {
            match lock(ctx, path, wait, session.id, &session.name).await {
                Ok(r) => r,
                Err(e) => ClientResponse::Error(e),
            }
        }
        ClientRequest::AwaitLock { path } => {
            let owner = session.id;
            let granted = tokio::select! {
                g = ctx.locks.await_grant(&path, owner) => g,
                // Anything from the client (its end of the connection
                // closing, most likely) ends the wait and gives up the
                // place in the queue.
                _ = r.recv_raw() => {
                    let locks = ctx.locks.clone();
                    tokio::spawn(async move { locks.cancel_wait(path, owner).await });
                    return Err(SessionError::LeftWaiting);
                }
            };
            match granted {
                Ok(info) => {
                    tracing::info!("{} got the lock on {} (it waited)", session.name, info.path);
                    ClientResponse::Locked(info)
                }
                Err(e) => ClientResponse::Error(e),
            }
        }
        ClientRequest::Unlock { path, force } => {
            // What the lock holds anywhere in the cluster, so the client is
            // told exactly what this unlock releases.
            let held: Vec<_> = crate::cluster::held_everywhere(&ctx.core, &ctx.peer.mesh)
                .await
                .into_iter()
                .filter(|h| h.path == path)
                .collect();
            let mut reports = ctx.events.relayed();
            match ctx.locks.unlock(path, session.id, force).await {
                Ok((lock, next)) => {
                    let outcomes = held_fates(&mut reports, &held).await;
                    let forced = lock.owner != session.id;
                    if forced {
                        tracing::warn!(
                            "lock on {} held by {} was FORCED open by {} ({})",
                            lock.path,
                            lock.owner_name,
                            session.name,
                            session.id
                        );
                    } else {
                        tracing::info!("{} unlocked {}", session.name, lock.path);
                    }
                    ctx.events.emit(EventKind::Unlocked {
                        path: lock.path.clone(),
                        by: session.name.clone(),
                        forced,
                    });
                    if let Some(n) = next {
                        ctx.events.emit(EventKind::Locked {
                            path: n.path.clone(),
                            owner: n.owner_name.clone(),
                            via: n.via.clone(),
                        });
                    }
                    ClientResponse::Unlocked {
                        lock,
                        released: held,
                        outcomes,
                    }
                }
                Err(e) => ClientResponse::Error(e),
            }
        }
        ClientRequest::Locks => match ctx.locks.list() {
            Ok(v) => ClientResponse::LockList(v),
            Err(e) => ClientResponse::Error(e),
        },
        ClientRequest::Held => ClientResponse::HeldList(
            crate::cluster::held_everywhere(&ctx.core, &ctx.peer.mesh).await,
        ),
        ClientRequest::Clients => ClientResponse::ClientList(ctx.clients.list()),
        ClientRequest::Versions { path } => {
            let names = |id| ctx.locks.name_of(id);
            let (versions, unanswered) =
                crate::cluster::versions_everywhere(&ctx.answerer, &ctx.peer.mesh, &names, &path)
                    .await;
            ClientResponse::VersionList {
                versions,
                unanswered,
            }
        }
        ClientRequest::RestoreVersion { node, id } => {
            match restore_version(ctx, session, node, id).await {
                Ok(r) => ClientResponse::VersionRestored(r),
                Err(e) => ClientResponse::Error(e),
            }
        }
        ClientRequest::Override { path } => {
            let action = crate::core::mirror::MirrorAction::Override;
            match ctx.core.mirror(action, path, session.name.clone()).await {
                Ok(r) => ClientResponse::Mirrored(r),
                Err(e) => ClientResponse::Error(e),
            }
        }
        ClientRequest::Revert { path } => {
            let action = crate::core::mirror::MirrorAction::Revert;
            match ctx.core.mirror(action, path, session.name.clone()).await {
                Ok(r) => ClientResponse::Mirrored(r),
                Err(e) => ClientResponse::Error(e),
            }
        }
        ClientRequest::Ignored => match ignored(ctx).await {
            Ok(r) => ClientResponse::IgnoredList(r),
            Err(e) => ClientResponse::Error(e),
        },
        ClientRequest::Subscribe { after } => {
            let sub = ctx.events.subscribe(after);
            let epoch = ctx.events.epoch();
            send(w, req.id, ClientResponse::Subscribed { epoch }).await?;
            if let Some((from, to)) = sub.missed {
                w.send(&NodeToClient::Missed { epoch, from, to }).await?;
            }
            for e in sub.replay {
                session.last_seq = e.seq;
                w.send(&NodeToClient::Event(e)).await?;
            }
            *feed = Some(sub.live);
            return Ok(());
        }
        ClientRequest::Fetch { path, from } => {
            if let Err(e) = fetch(w, ctx, req.id, path, from).await? {
                send(w, req.id, ClientResponse::Error(e)).await?;
            }
            return Ok(());
        }
        ClientRequest::FetchConflict { node, id } => {
            if let Err(e) = fetch_conflict(w, ctx, req.id, node, id).await? {
                send(w, req.id, ClientResponse::Error(e)).await?;
            }
            return Ok(());
        }
        ClientRequest::Cache { node } => match node {
            None => ClientResponse::CacheReport(ctx.cache.report(&ctx.name)),
            Some(n) if n == ctx.name => ClientResponse::CacheReport(ctx.cache.report(&ctx.name)),
            Some(n) => match node_named(ctx, &n).await {
                None => ClientResponse::Error(no_such_node(ctx, &n)),
                Some(id) => match ctx
                    .peer
                    .mesh
                    .query(id, PeerQuery::Cache, crate::cluster::QUERY_TIMEOUT)
                    .await
                {
                    Ok(PeerAnswer::Cache(r)) => ClientResponse::CacheReport(r),
                    Ok(_) => ClientResponse::Error(ApiError::Other("unexpected answer".into())),
                    Err(e) => ClientResponse::Error(ApiError::Other(format!("{n}: {e}"))),
                },
            },
        },
        ClientRequest::Conflicts => {
            let names = |id| ctx.locks.name_of(id);
            let (copies, unanswered, not_listed) =
                crate::cluster::conflicts_everywhere(&ctx.core, &ctx.peer.mesh, &names).await;
            ClientResponse::ConflictList {
                copies,
                unanswered,
                not_listed,
            }
        }
        ClientRequest::ResolveConflict { node, id, action } => {
            match resolve_conflict(ctx, session, node, id, action).await {
                Ok(r) => ClientResponse::ConflictResolved(r),
                Err(e) => ClientResponse::Error(e),
            }
        }
        ClientRequest::Nodes => {
            let names = |id| ctx.locks.name_of(id);
            ClientResponse::NodeList(
                crate::cluster::nodes(
                    &ctx.answerer,
                    &ctx.core,
                    &ctx.peer.mesh,
                    &names,
                    &ctx.configured,
                )
                .await,
            )
        }
        ClientRequest::Ping { node } => ping(ctx, &node).await,
        ClientRequest::Discover { node } => {
            let table = match discover(ctx, &node).await {
                Ok(t) => t,
                Err(e) => return send(w, req.id, ClientResponse::Error(e)).await,
            };
            return send_table(w, req.id, table).await;
        }
        ClientRequest::Put {
            path,
            size,
            hash,
            mtime_ns,
            mode,
        } => match put(r, ctx, session, path, size, hash, mtime_ns, mode).await? {
            Ok(path) => ClientResponse::Stored { path },
            Err(e) => ClientResponse::Error(e),
        },
        ClientRequest::PutData { .. } => {
            ClientResponse::Error(ApiError::Other("upload data without a Put header".into()))
        }
    };
    send(w, req.id, body).await
}

/// How long an unlock waits for the nodes holding changes to say what
/// became of them.
const FATE_WAIT: Duration = Duration::from_secs(2);

/// What became of each of `held` after an unlock, from the events the
/// nodes holding them report (`Conflict` with the change's node as loser:
/// kept aside; `Released` from it: handed back), within [`FATE_WAIT`].
async fn held_fates(
    events: &mut broadcast::Receiver<Arc<Event>>,
    held: &[tandem_common::proto::HeldChange],
) -> Vec<tandem_common::proto::HeldFate> {
    use tandem_common::proto::HeldFate;
    let mut fates = vec![HeldFate::NotReported; held.len()];
    let deadline = tokio::time::Instant::now() + FATE_WAIT;
    while fates.contains(&HeldFate::NotReported) {
        let ev = match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(ev)) => ev,
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(_)) | Err(_) => break,
        };
        let (path, made_on, fate) = match &ev.kind {
            EventKind::Conflict {
                path,
                loser,
                kept_as,
                ..
            } => (
                path,
                loser,
                HeldFate::KeptAsConflict {
                    on: ev.node.clone(),
                    kept_as: kept_as.clone(),
                },
            ),
            EventKind::Released { path, from, .. } => (path, from, HeldFate::Released),
            _ => continue,
        };
        if let Some(i) = held.iter().enumerate().position(|(i, h)| {
            fates[i] == HeldFate::NotReported && &h.path == path && &h.node == made_on
        }) {
            fates[i] = fate;
        }
    }
    fates
}

/// Takes (or, with `wait`, queues for) the lock on `path` through the
/// lock cluster, after checking it is a file this node knows.
async fn lock(
    ctx: &Ctx,
    path: RelPath,
    wait: bool,
    owner: Uuid,
    owner_name: &str,
) -> Result<ClientResponse, ApiError> {
    let p = path.clone();
    ctx.core
        .ask_lock(|reply| LockMsg::Lockable(p, reply))
        .await??;
    let r = ctx.locks.lock(path, owner, owner_name, wait).await?;
    match &r {
        ClientResponse::Locked(l) => {
            tracing::info!("{owner_name} ({owner}) locked {} through this node", l.path);
            ctx.events.emit(EventKind::Locked {
                path: l.path.clone(),
                owner: l.owner_name.clone(),
                via: l.via.clone(),
            });
        }
        ClientResponse::Queued { lock, position } => tracing::info!(
            "{owner_name} ({owner}) waits for {} (place {position}, held by {})",
            lock.path,
            lock.owner_name
        ),
        _ => {}
    }
    Ok(r)
}

async fn send<S>(w: &mut FrameWriter<S>, id: u64, body: ClientResponse) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    w.send_msg(NodeToClient::Response { id, body }).await?;
    Ok(())
}

async fn ping(ctx: &Ctx, node: &str) -> ClientResponse {
    if node == ctx.name {
        return ClientResponse::Pong { rtt_us: 0 };
    }
    let t0 = std::time::Instant::now();
    // Linked: the link's round trip. Otherwise the whole path's, through
    // the nodes that forward the question.
    let answer = match crate::cluster::link_by_name(&ctx.peer.links, node) {
        Some(l) => {
            // Timed per try: a try on a link that was replaced is not
            // part of the round trip.
            let ping = |l: Arc<crate::links::LinkHandle>| async move {
                let t0 = std::time::Instant::now();
                l.query(PeerQuery::Ping).await.map(|_| t0.elapsed())
            };
            let (links, wait) = (&ctx.peer.links, crate::cluster::QUERY_TIMEOUT);
            match links.ask(&l.peer, wait, wait, ping).await {
                Some((_, Ok(rtt))) => {
                    return ClientResponse::Pong {
                        rtt_us: rtt.as_micros() as u64,
                    };
                }
                Some((_, Err(e))) => Err(e.to_string()),
                None => Err("not connected".to_string()),
            }
        }
        None => match node_named(ctx, node).await {
            Some(id) => {
                ctx.peer
                    .mesh
                    .query(id, PeerQuery::Ping, crate::cluster::QUERY_TIMEOUT)
                    .await
            }
            None => return ClientResponse::Error(no_such_node(ctx, node)),
        },
    };
    match answer {
        Ok(_) => ClientResponse::Pong {
            rtt_us: t0.elapsed().as_micros() as u64,
        },
        Err(e) => ClientResponse::Error(ApiError::Other(format!("{node}: {e}"))),
    }
}

async fn discover<'a>(
    ctx: &'a Ctx,
    node: &str,
) -> Result<crate::cluster::MergedList<'a>, ApiError> {
    let peer = if node == ctx.name {
        None
    } else {
        match node_named(ctx, node).await {
            Some(id) => Some(id),
            None => return Err(no_such_node(ctx, node)),
        }
    };
    crate::cluster::MergedList::of_node(&ctx.core, &ctx.peer.mesh, node, peer).await
}

/// Restores or discards a conflict copy on the node that keeps it.
async fn resolve_conflict(
    ctx: &Ctx,
    session: &Session,
    node: String,
    id: String,
    action: ConflictAction,
) -> Result<ConflictResolution, ApiError> {
    let by = session.name.clone();
    if node == ctx.name {
        return ctx.core.resolve_conflict(id, action, by).await;
    }
    let Some(target) = node_named(ctx, &node).await else {
        return Err(no_such_node(ctx, &node));
    };
    let q = PeerQuery::ResolveConflict { id, action, by };
    match ctx
        .peer
        .mesh
        .query(target, q, crate::cluster::QUERY_TIMEOUT)
        .await
    {
        Ok(PeerAnswer::ConflictResolved(r)) => r,
        Ok(_) => Err(ApiError::Other(format!("{node}: unexpected answer"))),
        // Not knowing whether it was done is said as such.
        Err(e) => Err(ApiError::Other(format!(
            "{node} did not confirm ({e}); check `tandem conflicts` before retrying"
        ))),
    }
}

/// Most ignored paths one `tandem ignored` lists.
const MAX_LISTED_IGNORED: usize = 10_000;

/// What this node ignores now: its patterns, and the paths on its disk
/// they match (walked off the async threads; ignored folders not entered).
async fn ignored(ctx: &Ctx) -> Result<tandem_common::proto::IgnoredReport, ApiError> {
    let ignores = ctx.ignores.get();
    let (root, skip) = (ctx.root.clone(), ctx.state_dir.clone());
    let set = ignores.clone();
    let (paths, not_listed) = tokio::task::spawn_blocking(move || {
        crate::scan::ignored(&root, &skip, &set, MAX_LISTED_IGNORED)
    })
    .await
    .map_err(|e| ApiError::Other(format!("listing ignored paths failed: {e}")))?;
    Ok(tandem_common::proto::IgnoredReport {
        node: ctx.name.clone(),
        patterns: ignores.rules().to_vec(),
        problems: ignores.problems().to_vec(),
        paths,
        not_listed,
    })
}

/// Restores a kept version on the node that keeps it (this one, or one
/// asked through the mesh).
async fn restore_version(
    ctx: &Ctx,
    session: &Session,
    node: String,
    id: String,
) -> Result<tandem_common::proto::VersionRestoration, ApiError> {
    let by = session.name.clone();
    if node == ctx.name {
        return ctx.core.restore_version(id, by).await;
    }
    let Some(target) = node_named(ctx, &node).await else {
        return Err(no_such_node(ctx, &node));
    };
    let q = PeerQuery::RestoreVersion { id, by };
    match ctx
        .peer
        .mesh
        .query(target, q, crate::cluster::QUERY_TIMEOUT)
        .await
    {
        Ok(PeerAnswer::VersionRestored(r)) => r,
        Ok(_) => Err(ApiError::Other(format!("{node}: unexpected answer"))),
        Err(e) => Err(ApiError::Other(format!(
            "{node} did not confirm ({e}); check `tandem versions` before retrying"
        ))),
    }
}

/// The error for a node name nobody has: which names exist.
fn no_such_node(ctx: &Ctx, name: &str) -> ApiError {
    let mut known: Vec<String> = ctx
        .peer
        .mesh
        .trust()
        .members()
        .into_iter()
        .map(|id| ctx.locks.name_of(id))
        .chain([ctx.name.clone()])
        .collect();
    known.sort();
    known.dedup();
    ApiError::NoSuchNode {
        name: name.to_string(),
        known,
    }
}

/// The trusted node called `name` (linked here or not). A node's name is
/// known here once it is linked here or in the lock cluster; until then
/// the nodes known by id only are asked for theirs.
async fn node_named(ctx: &Ctx, name: &str) -> Option<NodeId> {
    let others: Vec<NodeId> = ctx
        .peer
        .mesh
        .trust()
        .members()
        .into_iter()
        .filter(|id| *id != ctx.node_id)
        .collect();
    let names: Vec<String> = others.iter().map(|id| ctx.locks.name_of(*id)).collect();
    if let Some(i) = names.iter().position(|n| n == name) {
        return Some(others[i]);
    }
    let unnamed = others
        .iter()
        .zip(&names)
        .filter(|(id, n)| **n == id.to_string())
        .map(|(id, _)| async move {
            let q = ctx.peer.mesh.query(
                *id,
                PeerQuery::Status,
                crate::cluster::FORWARDED_QUERY_TIMEOUT,
            );
            match q.await {
                Ok(PeerAnswer::Status(st, _)) if st.name == name => Some(*id),
                _ => None,
            }
        });
    futures::future::join_all(unnamed)
        .await
        .into_iter()
        .flatten()
        .next()
}

/// Sends a table as it is read, `LIST_CHUNK` rows a response.
async fn send_table<S>(
    w: &mut FrameWriter<S>,
    id: u64,
    mut table: crate::cluster::MergedList<'_>,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut rows = std::collections::VecDeque::new();
    let mut sent = 0usize;
    loop {
        match table.next_rows().await {
            Ok(Some(more)) => rows.extend(more),
            Ok(None) => break,
            Err(e) => return send(w, id, ClientResponse::Error(e)).await,
        }
        // A chunk goes once a row after it is known, so the last one can
        // say that nothing follows.
        while rows.len() > LIST_CHUNK {
            let files: Vec<_> = rows.drain(..LIST_CHUNK).collect();
            sent += files.len();
            send(w, id, ClientResponse::Files { files, more: true }).await?;
        }
    }
    sent += rows.len();
    let files = rows.into();
    send(w, id, ClientResponse::Files { files, more: false }).await?;
    if sent > 10_000 {
        tokio::task::spawn_blocking(crate::metrics::release_memory);
    }
    Ok(())
}

/// Bytes per `Chunk` of a fetch.
const CHUNK: usize = 1024 * 1024;

/// Serves a fetch: the newest version, from the cache or this node's disk
/// when it holds it, else from a peer that does. Every block read here is
/// checked against the version's block hashes first, so a file that changes
/// while it is being read ends the fetch with an error instead of mixing
/// versions; blocks from a peer are checked for their lengths, and the
/// whole content's hash is checked as the last chunk goes (the client
/// checks it too).
/// The outer `Result` is the connection; the inner one goes to the client.
async fn fetch<S>(
    w: &mut FrameWriter<S>,
    ctx: &Ctx,
    id: u64,
    path: RelPath,
    from: Option<String>,
) -> Result<Result<(), ApiError>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let missing = || ApiError::Other(format!("{path} does not exist"));
    if let Some(n) = &from
        && *n != ctx.name
        && node_named(ctx, n).await.is_none()
    {
        return Ok(Err(no_such_node(ctx, n)));
    }
    let names = |id| ctx.locks.name_of(id);
    let row = crate::cluster::merged_row(&ctx.core, &ctx.peer.mesh, &names, &ctx.name, &path).await;
    let (file, ids) = match row {
        Ok(Some(f)) => f,
        Ok(None) => {
            // Folders sync too, but only files are fetched.
            if let Ok(Some(crate::core::Served { entry: e, .. })) =
                ctx.core.entry(path.clone()).await
                && !e.deleted
                && e.kind == tandem_common::model::EntryKind::Dir
            {
                return Ok(Err(ApiError::Other(format!(
                    "{path} is a folder; fetch the files in it one by one (`tandem list` shows them)"
                ))));
            }
            return Ok(Err(missing()));
        }
        Err(e) => return Ok(Err(e)),
    };
    if let Some(target) = &file.link {
        return Ok(Err(ApiError::Other(format!(
            "{path} is a symbolic link to {target}; links sync as links and are never followed, so there is nothing to fetch (make the same link with `ln -s {target} ...`)"
        ))));
    }
    let linked = |n: &String| crate::cluster::link_by_name(&ctx.peer.links, n).is_some();
    let source = match from {
        Some(n) if file.nodes.contains(&n) => n,
        Some(n) => {
            return Ok(Err(ApiError::Other(format!(
                "node {n} does not hold the newest version of {path} (it is on: {})",
                file.nodes.join(", ")
            ))));
        }
        None if file.nodes.contains(&ctx.name) => ctx.name.clone(),
        // A holder linked here sends faster than one reached through others.
        None => match file.nodes.iter().find(|n| linked(n)).or(file.nodes.first()) {
            Some(n) => n.clone(),
            None => return Ok(Err(missing())),
        },
    };
    let start = ClientResponse::FetchStart {
        file: file.clone(),
        from: source.clone(),
    };
    send(w, id, start).await?;
    if source == ctx.name {
        return serve_local(w, ctx, id, &file).await;
    }
    let link = crate::cluster::link_by_name(&ctx.peer.links, &source);
    let far = ids.iter().find(|(n, _)| *n == source).map(|(_, id)| *id);
    if link.is_none() && far.is_none() {
        return Ok(Err(ApiError::Other(format!("node {source} went away"))));
    }
    let blocks = file.size.div_ceil(tandem_common::model::BLOCK_SIZE) as u32;
    if blocks == 0 {
        send(w, id, ClientResponse::chunk(Bytes::new(), true)).await?;
    }
    let mut hasher = blake3::Hasher::new();
    let mut i = 0u32;
    while i < blocks {
        let n = (blocks - i).min(crate::cluster::MESH_BLOCKS as u32);
        let want: Vec<u32> = (i..i + n).collect();
        let asked: Vec<usize> = want.iter().map(|&b| b as usize).collect();
        let got = match (&link, far) {
            // Over the link: the blocks travel as raw frames, each checked
            // by the sender (what reaches the client is only checked whole,
            // at its end, and is not tried again).
            (Some(link), _) => link
                .get_blocks(path.clone(), file.hash, want, Vec::new(), true)
                .await
                .map_err(|e| e.to_string()),
            (None, Some(node)) => far_blocks(ctx, node, path.clone(), file.hash, want).await,
            (None, None) => Err(format!("node {source} went away")),
        };
        let got = match got.and_then(|b| crate::transfer::check_blocks(file.size, &asked, b)) {
            Ok(b) => b,
            Err(e) => return Ok(Err(ApiError::Other(format!("fetching from {source}: {e}")))),
        };
        i += n;
        let count = got.len();
        for (k, data) in got.into_iter().enumerate() {
            hasher.update(&data);
            let last = i >= blocks && k + 1 == count;
            if last && ContentHash(*hasher.finalize().as_bytes()) != file.hash {
                return Ok(Err(ApiError::Other(format!(
                    "{path} changed on {source} while being sent; try again"
                ))));
            }
            send(w, id, ClientResponse::chunk(data, last)).await?;
        }
    }
    Ok(Ok(()))
}

/// Blocks of a file on a node not linked here, through the mesh.
async fn far_blocks(
    ctx: &Ctx,
    node: NodeId,
    path: RelPath,
    hash: ContentHash,
    blocks: Vec<u32>,
) -> Result<Vec<tandem_common::proto::BlockData>, String> {
    let q = PeerQuery::Blocks { path, hash, blocks };
    match ctx
        .peer
        .mesh
        .query(node, q, crate::cluster::QUERY_TIMEOUT)
        .await?
    {
        PeerAnswer::Blocks(got) => Ok(got
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|b| tandem_common::proto::BlockData::new(b.index, Bytes::from(b.data.0)))
            .collect()),
        _ => Err("unexpected answer".into()),
    }
}

/// The node that keeps a conflict copy: this one, or one asked through
/// the mesh.
struct Keeper<'a> {
    ctx: &'a Ctx,
    node: &'a str,
    far: Option<NodeId>,
}

impl Keeper<'_> {
    async fn ask(&self, node: NodeId, q: PeerQuery) -> Result<PeerAnswer, ApiError> {
        let mesh = &self.ctx.peer.mesh;
        mesh.query(node, q, crate::cluster::QUERY_TIMEOUT)
            .await
            .map_err(|e| ApiError::Other(format!("{}: {e}", self.node)))
    }

    fn unexpected(&self) -> ApiError {
        ApiError::Other(format!("{}: unexpected answer", self.node))
    }

    async fn open(&self, id: &str) -> Result<OpenedCopy, ApiError> {
        let Some(far) = self.far else {
            return self.ctx.answerer.open_conflict(id.to_string()).await;
        };
        match self
            .ask(far, PeerQuery::OpenConflict { id: id.into() })
            .await?
        {
            PeerAnswer::ConflictOpened(r) => r,
            _ => Err(self.unexpected()),
        }
    }

    async fn read(&self, id: &str, offset: u64, len: u32) -> Result<Vec<u8>, ApiError> {
        let Some(far) = self.far else {
            return self
                .ctx
                .answerer
                .read_conflict(id.to_string(), offset, len)
                .await;
        };
        let q = PeerQuery::ReadConflict {
            id: id.into(),
            offset,
            len,
        };
        match self.ask(far, q).await? {
            PeerAnswer::ConflictData(r) => r.map(|d| d.0),
            _ => Err(self.unexpected()),
        }
    }
}

/// Serves a fetch of a kept conflict copy, from this node's conflicts
/// folder or, through the mesh, from the node that keeps it. The copy is
/// hashed where it is kept before anything is sent; what arrives is hashed
/// again here, so a copy that changes meanwhile ends the fetch with an
/// error instead of a mix.
async fn fetch_conflict<S>(
    w: &mut FrameWriter<S>,
    ctx: &Ctx,
    id: u64,
    node: String,
    copy: String,
) -> Result<Result<(), ApiError>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let far = if node == ctx.name {
        None
    } else {
        match node_named(ctx, &node).await {
            Some(n) => Some(n),
            None => return Ok(Err(no_such_node(ctx, &node))),
        }
    };
    let keeper = Keeper {
        ctx,
        node: &node,
        far,
    };
    let opened = match keeper.open(&copy).await {
        Ok(o) => o,
        Err(e) => return Ok(Err(e)),
    };
    let Ok(as_path) = RelPath::new(&opened.copy.id) else {
        return Ok(Err(ApiError::Other(format!(
            "{node} named the copy {:?}, which is not a valid path",
            opened.copy.id
        ))));
    };
    let size = opened.copy.size;
    let file = tandem_common::proto::ListedFile {
        link: None,
        path: as_path,
        size,
        mtime_ns: opened.copy.mtime_ns,
        hash: opened.hash,
        nodes: vec![node.clone()],
        locked_by: None,
        held: 0,
        states: Vec::new(),
    };
    send(
        w,
        id,
        ClientResponse::FetchStart {
            file,
            from: node.clone(),
        },
    )
    .await?;
    if size == 0 {
        send(w, id, ClientResponse::chunk(Bytes::new(), true)).await?;
    }
    let mut hasher = blake3::Hasher::new();
    let mut at = 0u64;
    while at < size {
        let len = (size - at).min(tandem_common::proto::MAX_MESH_READ as u64) as u32;
        let got = keeper.read(&copy, at, len).await;
        let data = match got {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        if data.len() != len as usize {
            return Ok(Err(ApiError::Other(format!(
                "the conflict copy {copy} on {node} changed while being sent; try again"
            ))));
        }
        at += len as u64;
        hasher.update(&data);
        let last = at >= size;
        if last && ContentHash(*hasher.finalize().as_bytes()) != opened.hash {
            return Ok(Err(ApiError::Other(format!(
                "the conflict copy {copy} on {node} changed while being sent; try again"
            ))));
        }
        send(w, id, ClientResponse::chunk(Bytes::from(data), last)).await?;
    }
    Ok(Ok(()))
}

async fn serve_local<S>(
    w: &mut FrameWriter<S>,
    ctx: &Ctx,
    id: u64,
    file: &tandem_common::proto::ListedFile,
) -> Result<Result<(), ApiError>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let path = file.path.clone();
    let Ok(Some(crate::core::Served { full, entry, .. })) = ctx.core.entry(path.clone()).await
    else {
        return Ok(Err(ApiError::Other(format!("{path} does not exist"))));
    };
    if entry.hash != file.hash || !entry.is_live_file() {
        return Ok(Err(ApiError::Other(format!("{path} changed; try again"))));
    }
    if entry.size <= ctx.cache.capacity() {
        let key = (path.clone(), entry.hash);
        let (f2, e2, core) = (full.clone(), entry.clone(), ctx.core.clone());
        let res = ctx
            .cache
            .get_or_load(&key, || async move {
                tokio::task::spawn_blocking(move || {
                    let mut data = Vec::new();
                    crate::scan::open_nofollow(&f2)
                        .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut data))
                        .map_err(|e| {
                            core.look_again(&f2);
                            format!("cannot read {}: {e}", e2.path)
                        })?;
                    if ContentHash::of(&data) != e2.hash {
                        core.recheck(&f2, e2.hash);
                        return Err(format!("{} changed while being read; try again", e2.path));
                    }
                    Ok(bytes::Bytes::from(data))
                })
                .await
                .map_err(|e| e.to_string())?
            })
            .await;
        let data = match res {
            Ok(d) => d,
            Err(e) => return Ok(Err(ApiError::Other(e))),
        };
        if data.is_empty() {
            send(w, id, ClientResponse::chunk(Bytes::new(), true)).await?;
        }
        let mut at = 0;
        while at < data.len() {
            let end = (at + CHUNK).min(data.len());
            // A slice of the cached bytes: nothing is copied on the way out.
            let chunk = ClientResponse::chunk(data.slice(at..end), end == data.len());
            send(w, id, chunk).await?;
            at = end;
        }
        return Ok(Ok(()));
    }
    // Larger than the cache: stream from disk, block by block, verified.
    ctx.cache.count_uncached();
    let f = match crate::scan::open_nofollow(&full) {
        Ok(f) => Arc::new(f),
        Err(e) => return Ok(Err(ApiError::Other(format!("cannot read {path}: {e}")))),
    };
    let bs = tandem_common::model::BLOCK_SIZE;
    let per_chunk = (CHUNK as u64 / bs).max(1) as usize;
    let mut i = 0usize;
    while i < entry.blocks.len() {
        let n = (entry.blocks.len() - i).min(per_chunk);
        let (f2, e2) = (f.clone(), entry.clone());
        // Fails with the read's error, or `None` when a block is not what
        // the record says.
        let read = tokio::task::spawn_blocking(move || -> Result<Bytes, Option<String>> {
            use std::os::unix::fs::FileExt;
            let mut out = Vec::new();
            for b in i..i + n {
                let off = b as u64 * bs;
                let len = (e2.size - off).min(bs) as usize;
                let mut buf = vec![0u8; len];
                f2.read_exact_at(&mut buf, off)
                    .map_err(|e| Some(e.to_string()))?;
                if tandem_common::hashing::block_hash(&buf, b, e2.size) != e2.blocks[b] {
                    return Err(None);
                }
                out.extend_from_slice(&buf);
            }
            Ok(Bytes::from(out))
        })
        .await;
        let data = match read {
            Ok(Ok(d)) => d,
            Ok(Err(None)) => {
                ctx.core.recheck(&full, entry.hash);
                return Ok(Err(ApiError::Other(format!(
                    "{path} changed while being read; try again"
                ))));
            }
            Ok(Err(Some(e))) => {
                ctx.core.look_again(&full);
                return Ok(Err(ApiError::Other(format!("cannot read {path}: {e}"))));
            }
            Err(e) => return Ok(Err(ApiError::Other(format!("reading {path} failed: {e}")))),
        };
        i += n;
        let last = i >= entry.blocks.len();
        send(w, id, ClientResponse::chunk(data, last)).await?;
    }
    Ok(Ok(()))
}

/// Receives an upload into a temp file, checks its hash, and hands it to
/// the core to put in place like a local change.
#[allow(clippy::too_many_arguments)]
async fn put<S>(
    r: &mut FrameReader<S>,
    ctx: &Ctx,
    session: &Session,
    path: RelPath,
    size: u64,
    hash: ContentHash,
    mtime_ns: i64,
    mode: u32,
) -> Result<Result<RelPath, ApiError>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use std::io::Write;
    let tmp = ctx
        .tmp_dir
        .join(format!("put-{}.part", Uuid::new_v4().simple()));
    let mut file = std::fs::File::create(&tmp);
    let mut hasher = blake3::Hasher::new();
    let mut got = 0u64;
    let mut failed = file
        .as_ref()
        .err()
        .map(|e| format!("cannot store the upload: {e}"));
    // Read every data frame up to the end marker, even after a failure, so
    // the connection stays in step.
    loop {
        let Some(req) = r.recv::<Request>().await? else {
            let _ = std::fs::remove_file(&tmp);
            return Ok(Err(ApiError::Other("upload cut off".into())));
        };
        let ClientRequest::PutData { data } = req.body else {
            let _ = std::fs::remove_file(&tmp);
            return Err(SessionError::Codec(
                tandem_common::codec::CodecError::Decode("expected upload data".into()),
            ));
        };
        if data.is_empty() {
            break;
        }
        got += data.len() as u64;
        hasher.update(&data);
        if failed.is_none()
            && let Ok(f) = file.as_mut()
            && let Err(e) = f.write_all(&data)
        {
            failed = Some(format!("cannot store the upload: {e}"));
        }
    }
    let res = match (failed, file) {
        (Some(f), _) => Err(ApiError::Other(f)),
        (None, Err(e)) => Err(ApiError::Other(format!("cannot store the upload: {e}"))),
        (None, Ok(f)) => {
            if got != size || ContentHash(*hasher.finalize().as_bytes()) != hash {
                Err(ApiError::Other(format!(
                    "upload of {path} arrived damaged ({got} of {size} bytes, or a hash mismatch); nothing was changed"
                )))
            } else {
                f.sync_all()
                    .map_err(|e| ApiError::Other(format!("cannot store the upload: {e}")))
            }
        }
    };
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Ok(Err(e));
    }
    let who = session.name.clone();
    let res = ctx
        .core
        .put(path.clone(), tmp.clone(), mtime_ns, mode, who, session.id)
        .await
        .and_then(|r| r);
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(res.map(|()| path))
}

/// Reads and drops the data frames of an upload that was refused.
async fn drain_upload<S>(r: &mut FrameReader<S>) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match r.recv::<Request>().await? {
            None => return Ok(()),
            Some(Request {
                body: ClientRequest::PutData { data },
                ..
            }) if !data.is_empty() => {}
            Some(_) => return Ok(()),
        }
    }
}

/// Serves the Prometheus text format (on any path).
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    ctx: Ctx,
    stop: tokio_util::sync::CancellationToken,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let (mut s, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends pass: try again shortly, do not spin.
                    tracing::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            // One read is enough for a GET; the request is not otherwise used.
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            let c = ctx.core.counts().await.unwrap_or_default();
            let (files, bytes) = (c.files, c.bytes);
            let (hits, misses, used) = ctx.cache.totals();
            let g = crate::metrics::Gauges {
                files,
                bytes,
                peers_up: ctx.peer.links.peers().len() as u64,
                cache_hits: hits,
                cache_misses: misses,
                cache_bytes: used,
            };
            let body = crate::metrics::prometheus(&ctx.metrics, &g);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
        });
    }
}
