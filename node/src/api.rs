//! Incoming connections: the handshake, then a client session (requests
//! answered through the core). Anything malformed closes that one
//! connection with a log line; the node keeps serving everyone else.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_common::NodeId;
use tandem_common::RelPath;
use tandem_common::codec::{FrameIo, FrameReader, FrameWriter};
use tandem_common::proto::{
    self, ApiError, ClientInfo, ClientRequest, ClientResponse, Event, EventKind, HandshakeError,
    Hello, HelloReply, LockInfo, LockRecord, LockState, NodeToClient, PROTOCOL_VERSION, Refusal,
    Request, Role,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::core::{CoreHandle, LockMsg};

/// How long a new connection has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
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
    /// The configured peer addresses (all must agree to a lock).
    pub configured: Vec<SocketAddr>,
    /// Live client sessions.
    pub clients: Clients,
    /// The live feed.
    pub events: Arc<crate::events::EventBus>,
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

    fn set_identity(&self, k: u64, id: Uuid, name: &str) {
        if let Some(c) = self.lock().get_mut(&k) {
            c.id = Some(id);
            c.name = name.to_string();
        }
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

/// Serves one accepted connection until it closes.
pub async fn serve_connection<S>(io: S, addr: SocketAddr, ctx: Ctx)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut io = FrameIo::new(io);
    let (hello, nonce) = match tokio::time::timeout(HELLO_TIMEOUT, handshake(&mut io, &ctx)).await {
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
    match hello.role {
        Role::Client => {
            tracing::info!("client {:?} connected from {addr}", hello.name);
            let key = ctx.clients.add(ClientInfo {
                id: None,
                name: hello.name.clone(),
                addr: addr.to_string(),
                since_ns: crate::core::now_ns(),
            });
            let session = Session {
                nonce,
                client: None,
                key,
                last_seq: 0,
            };
            ctx.events.emit(EventKind::ClientConnected {
                name: hello.name.clone(),
                addr: addr.to_string(),
            });
            let res = client_session(io, &ctx, session).await;
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
        Role::Peer => {
            let peer = NodeId(hello.id);
            crate::peer::run_link(io, peer, hello.name, peer, ctx.peer.clone()).await;
        }
    }
}

async fn handshake<S>(io: &mut FrameIo<S>, ctx: &Ctx) -> Result<(Hello, [u8; 32]), HandshakeError>
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
        io.send_raw(proto::encode_hello(&HelloReply::Refused(refusal.clone()))?)
            .await?;
        return Err(HandshakeError::Refused(refusal));
    };
    if hello.id == ctx.node_id.0 {
        io.send_raw(proto::encode_hello(&HelloReply::Refused(
            Refusal::SelfConnection,
        ))?)
        .await?;
        return Err(HandshakeError::Refused(Refusal::SelfConnection));
    }
    let nonce = {
        let mut n = [0u8; 32];
        n[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        n[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        n
    };
    let reply = HelloReply::Welcome {
        node_id: ctx.node_id,
        name: ctx.name.clone(),
        nonce,
    };
    io.send_raw(proto::encode_hello(&reply)?).await?;
    Ok((hello, nonce))
}

/// Errors that end a client session.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Codec(#[from] tandem_common::codec::CodecError),
}

/// Who is on the other end of a client connection, once proven.
struct Session {
    nonce: [u8; 32],
    client: Option<(Uuid, String)>,
    /// Key in the live-client registry.
    key: u64,
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
    let mut feed: Option<broadcast::Receiver<Event>> = None;
    loop {
        tokio::select! {
            req = r.recv::<Request>() => {
                let Some(req) = req? else { return Ok(()) };
                handle_request(&mut w, &mut r, ctx, &mut session, &mut feed, req).await?;
            }
            ev = next_event(&mut feed) => match ev {
                Ok(e) => {
                    session.last_seq = e.seq;
                    w.send(&NodeToClient::Event(e)).await?;
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
    feed: &mut Option<broadcast::Receiver<Event>>,
) -> Result<Event, broadcast::error::RecvError> {
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
    feed: &mut Option<broadcast::Receiver<Event>>,
    req: Request,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let body = match req.body {
        ClientRequest::List => match ctx.core.list().await {
            Ok(files) => {
                let mut chunks = files.chunks(LIST_CHUNK).peekable();
                if chunks.peek().is_none() {
                    let empty = ClientResponse::Files {
                        files: vec![],
                        more: false,
                    };
                    send(w, req.id, empty).await?;
                }
                while let Some(chunk) = chunks.next() {
                    let more = chunks.peek().is_some();
                    let body = ClientResponse::Files {
                        files: chunk.to_vec(),
                        more,
                    };
                    send(w, req.id, body).await?;
                }
                return Ok(());
            }
            Err(e) => ClientResponse::Error(e),
        },
        ClientRequest::Register { name } => {
            match ctx
                .core
                .ask_lock(|reply| LockMsg::Register {
                    name: name.clone(),
                    reply,
                })
                .await
            {
                Ok(rec) => {
                    ctx.clients.set_identity(session.key, rec.id, &name);
                    session.client = Some((rec.id, name));
                    ClientResponse::Registered {
                        id: rec.id,
                        token: rec.token,
                    }
                }
                Err(e) => ClientResponse::Error(e),
            }
        }
        ClientRequest::Login { id, name, proof } => {
            let nonce = session.nonce;
            let res = ctx
                .core
                .ask_lock(|reply| LockMsg::Login {
                    id,
                    name: name.clone(),
                    nonce,
                    proof,
                    reply,
                })
                .await
                .and_then(|r| r);
            match res {
                Ok(()) => {
                    tracing::info!("client {name:?} logged in as {id}");
                    ctx.clients.set_identity(session.key, id, &name);
                    session.client = Some((id, name));
                    ClientResponse::LoggedIn
                }
                Err(e) => {
                    tracing::warn!("refused login as {id} ({name:?}): {e}");
                    ClientResponse::Error(e)
                }
            }
        }
        ClientRequest::Lock { path } => match &session.client {
            None => ClientResponse::Error(ApiError::NotLoggedIn),
            Some((id, name)) => match lock(ctx, path, *id, name).await {
                Ok(info) => ClientResponse::Locked(info),
                Err(e) => ClientResponse::Error(e),
            },
        },
        ClientRequest::Unlock { path, force } => match &session.client {
            None => ClientResponse::Error(ApiError::NotLoggedIn),
            Some((id, name)) => {
                let res = ctx
                    .core
                    .ask_lock(|reply| LockMsg::Unlock {
                        path,
                        client: *id,
                        name: name.clone(),
                        force,
                        reply,
                    })
                    .await
                    .and_then(|r| r);
                match res {
                    Ok((lock, released)) => ClientResponse::Unlocked { lock, released },
                    Err(e) => ClientResponse::Error(e),
                }
            }
        },
        ClientRequest::Locks => match ctx.core.ask_lock(LockMsg::List).await {
            Ok(v) => ClientResponse::LockList(v),
            Err(e) => ClientResponse::Error(e),
        },
        ClientRequest::Held => match ctx.core.ask_lock(LockMsg::Held).await {
            Ok(v) => ClientResponse::HeldList(v),
            Err(e) => ClientResponse::Error(e),
        },
        ClientRequest::Clients => ClientResponse::ClientList(ctx.clients.list()),
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
        ClientRequest::Fetch { .. }
        | ClientRequest::Cache { .. }
        | ClientRequest::Nodes
        | ClientRequest::Ping { .. }
        | ClientRequest::Discover { .. }
        | ClientRequest::Put { .. }
        | ClientRequest::PutData { .. } => {
            let _ = r;
            ClientResponse::Error(ApiError::Other("not available in this build yet".into()))
        }
    };
    send(w, req.id, body).await
}

/// How long a peer has to vote on a lock proposal.
const VOTE_TIMEOUT: Duration = Duration::from_secs(5);

/// Takes a lock: reserve here, then every known peer must vote yes; any
/// refusal or unreachable peer aborts it everywhere.
async fn lock(
    ctx: &Ctx,
    path: RelPath,
    owner: Uuid,
    owner_name: &str,
) -> Result<LockInfo, ApiError> {
    let mut rec = LockRecord {
        id: Uuid::new_v4(),
        path,
        owner,
        owner_name: owner_name.to_string(),
        since_ns: crate::core::now_ns(),
        via: ctx.name.clone(),
        state: LockState::Proposed,
    };
    let r = rec.clone();
    ctx.core
        .ask_lock(|reply| LockMsg::Propose {
            lock: r,
            local: true,
            reply,
        })
        .await??;
    let abort = |rec: &LockRecord, why: String| {
        ctx.core.tell_lock(LockMsg::Update(
            LockRecord {
                state: LockState::Aborted,
                ..rec.clone()
            },
            None,
        ));
        ApiError::Other(why)
    };
    // Every configured peer address must be up, and every node ever linked.
    let links = &ctx.peer.links;
    for addr in &ctx.configured {
        let up = links
            .dialed(addr)
            .is_some_and(|id| links.get(&id).is_some());
        if !up {
            return Err(abort(
                &rec,
                format!(
                    "lock refused: peer node {addr} is unreachable, so it cannot agree (no split brain)"
                ),
            ));
        }
    }
    let known = ctx.core.ask_lock(LockMsg::KnownPeers).await?;
    let mut votes = Vec::new();
    for (peer, name) in known {
        let Some(link) = links.get(&peer) else {
            return Err(abort(
                &rec,
                format!(
                    "lock refused: peer node {name} is unreachable, so it cannot agree (no split brain)"
                ),
            ));
        };
        let r = rec.clone();
        votes.push(async move {
            let v = tokio::time::timeout(VOTE_TIMEOUT, link.propose(r))
                .await
                .unwrap_or_else(|_| Err(ApiError::Other("no answer in time".into())));
            (name, v)
        });
    }
    for (name, vote) in futures::future::join_all(votes).await {
        match vote {
            Ok(()) => {}
            // The holder or the racing proposal, as the client should see it.
            Err(e @ (ApiError::LockedBy { .. } | ApiError::LockBusy { .. })) => {
                abort(&rec, String::new());
                return Err(e);
            }
            Err(why) => return Err(abort(&rec, format!("lock refused by node {name}: {why}"))),
        }
    }
    rec.state = LockState::Held;
    ctx.core.tell_lock(LockMsg::Update(rec.clone(), None));
    tracing::info!(
        "{owner_name} ({owner}) locked {} through this node",
        rec.path
    );
    Ok(crate::locks::info(&rec))
}
async fn send<S>(w: &mut FrameWriter<S>, id: u64, body: ClientResponse) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    w.send(&NodeToClient::Response { id, body }).await?;
    Ok(())
}
