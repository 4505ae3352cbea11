//! The async client library shared by the one-shot subcommands and (later)
//! the terminal UI: connect, handshake, request/response.

use std::net::SocketAddr;

use tandem_common::codec::{CodecError, FrameIo};
use tandem_common::proto::{
    self, ApiError, ClientRequest, ClientResponse, HandshakeError, Hello, ListedFile, NodeToClient,
    Request, Role,
};
use tokio::net::TcpStream;
use uuid::Uuid;

/// Client-side failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TCP connect failed.
    #[error(
        "cannot connect to {addr}: {reason} (is tandem-node running there? set --node or TANDEM_NODE)"
    )]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        reason: std::io::Error,
    },
    /// The address did not resolve.
    #[error("cannot resolve node address {0:?}: {1}")]
    Resolve(String, std::io::Error),
    /// The handshake failed.
    #[error("handshake with {addr} failed: {reason}")]
    Handshake {
        /// Where.
        addr: String,
        /// Why.
        reason: HandshakeError,
    },
    /// Framing failed mid-session.
    #[error("connection to the node failed: {0}")]
    Codec(#[from] CodecError),
    /// The node closed the connection.
    #[error("the node closed the connection")]
    Closed,
    /// The node answered with an error.
    #[error("{0}")]
    Api(#[from] ApiError),
}

/// A connected, handshaken session with one node.
pub struct Client {
    io: FrameIo<TcpStream>,
    next_id: u64,
    /// The node's name, from its welcome.
    pub node_name: String,
}

impl Client {
    /// Connects to `addr` (host:port) and says hello as a client.
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| ClientError::Resolve(addr.to_string(), e))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for a in &addrs {
            match TcpStream::connect(a).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = stream.ok_or_else(|| ClientError::Connect {
            addr: addr.to_string(),
            reason: last.unwrap_or_else(|| std::io::Error::other("no addresses")),
        })?;
        let _ = stream.set_nodelay(true);
        let mut io = FrameIo::new(stream);
        let hello = Hello {
            role: Role::Client,
            id: Uuid::new_v4(),
            name: default_name(),
        };
        let (_, node_name) = proto::connect_handshake(&mut io, &hello)
            .await
            .map_err(|reason| ClientError::Handshake {
                addr: addr.to_string(),
                reason,
            })?;
        Ok(Client {
            io,
            next_id: 1,
            node_name,
        })
    }

    async fn send(&mut self, body: ClientRequest) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.io.send(&Request { id, body }).await?;
        Ok(id)
    }

    async fn recv_for(&mut self, id: u64) -> Result<ClientResponse, ClientError> {
        loop {
            match self.io.recv::<NodeToClient>().await? {
                None => return Err(ClientError::Closed),
                Some(NodeToClient::Response { id: rid, body }) if rid == id => return Ok(body),
                Some(NodeToClient::Response { .. }) => continue,
            }
        }
    }

    /// The node's file table, sorted by path.
    pub async fn list(&mut self) -> Result<Vec<ListedFile>, ClientError> {
        let id = self.send(ClientRequest::List).await?;
        let mut out = Vec::new();
        loop {
            match self.recv_for(id).await? {
                ClientResponse::Files { files, more } => {
                    out.extend(files);
                    if !more {
                        return Ok(out);
                    }
                }
                ClientResponse::Error(e) => return Err(e.into()),
            }
        }
    }
}

/// `user@host`, the default display name of a client.
pub fn default_name() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}
