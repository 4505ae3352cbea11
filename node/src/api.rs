//! Incoming connections: the handshake, then a client session (requests
//! answered through the core). Anything malformed closes that one
//! connection with a log line; the node keeps serving everyone else.

use std::net::SocketAddr;
use std::time::Duration;

use tandem_common::NodeId;
use tandem_common::codec::FrameIo;
use tandem_common::proto::{
    self, ClientResponse, HandshakeError, Hello, HelloReply, NodeToClient, PROTOCOL_VERSION,
    Refusal, Request, Role,
};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::core::CoreHandle;

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
}

/// Serves one accepted connection until it closes.
pub async fn serve_connection<S>(io: S, addr: SocketAddr, ctx: Ctx)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut io = FrameIo::new(io);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, handshake(&mut io, &ctx)).await {
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
            match client_session(&mut io, &ctx).await {
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

async fn handshake<S>(io: &mut FrameIo<S>, ctx: &Ctx) -> Result<Hello, HandshakeError>
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
    let reply = HelloReply::Welcome {
        node_id: ctx.node_id,
        name: ctx.name.clone(),
    };
    io.send_raw(proto::encode_hello(&reply)?).await?;
    Ok(hello)
}

/// Errors that end a client session.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Codec(#[from] tandem_common::codec::CodecError),
}

async fn client_session<S>(io: &mut FrameIo<S>, ctx: &Ctx) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(req) = io.recv::<Request>().await? {
        match req.body {
            proto::ClientRequest::List => match ctx.core.list().await {
                Ok(files) => {
                    let mut chunks = files.chunks(LIST_CHUNK).peekable();
                    if chunks.peek().is_none() {
                        send(
                            io,
                            req.id,
                            ClientResponse::Files {
                                files: vec![],
                                more: false,
                            },
                        )
                        .await?;
                    }
                    while let Some(chunk) = chunks.next() {
                        let more = chunks.peek().is_some();
                        let body = ClientResponse::Files {
                            files: chunk.to_vec(),
                            more,
                        };
                        send(io, req.id, body).await?;
                    }
                }
                Err(e) => send(io, req.id, ClientResponse::Error(e)).await?,
            },
        }
    }
    Ok(())
}

async fn send<S>(io: &mut FrameIo<S>, id: u64, body: ClientResponse) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    io.send(&NodeToClient::Response { id, body }).await?;
    Ok(())
}
