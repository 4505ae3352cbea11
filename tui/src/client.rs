//! The async client library shared by the one-shot subcommands and (later)
//! the terminal UI: connect, handshake, request/response.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tandem_common::codec::{CodecError, FrameIo};
use tandem_common::proto::{
    self, ApiError, ClientRequest, ClientResponse, Event, FeedCursor, HandshakeError, Hello,
    ListedFile, NodeToClient, Request, Role,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
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
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The node sent something that does not answer the request.
    #[error("unexpected answer from the node: {0}")]
    Unexpected(String),
    /// The identity file could not be used.
    #[error("{0}")]
    Identity(String),
}

/// A connected, handshaken session with one node. Requests may run
/// concurrently (`&self`); a background task routes each answer to its
/// request and feed events to [`Client::events`].
pub struct Client {
    out: mpsc::UnboundedSender<Request>,
    pending: Pending,
    next_id: AtomicU64,
    events: Mutex<Option<mpsc::UnboundedReceiver<FeedItem>>>,
    /// The node's name, from its welcome.
    pub node_name: String,
    welcome: proto::Welcomed,
    reader: tokio::task::JoinHandle<()>,
}

type Pending = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<ClientResponse>>>>;

/// Something from the feed.
#[derive(Debug, Clone)]
pub enum FeedItem {
    /// An event.
    Event(Event),
    /// Events were lost between two sequences; refresh the view.
    Missed {
        /// The node's run.
        epoch: u64,
        /// First lost sequence.
        from: u64,
        /// Next sequence to come.
        to: u64,
    },
    /// The connection ended.
    Closed(String),
}

/// The answers to one request, as they arrive.
pub struct Answers {
    id: u64,
    rx: mpsc::UnboundedReceiver<ClientResponse>,
    pending: Pending,
}

impl Answers {
    /// The next answer; `Closed` if the connection ended.
    pub async fn next(&mut self) -> Result<ClientResponse, ClientError> {
        match self.rx.recv().await {
            Some(ClientResponse::Error(e)) => Err(e.into()),
            Some(r) => Ok(r),
            None => Err(ClientError::Closed),
        }
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        lock(&self.pending).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// Connects to `addr` (host:port) and says hello as a client.
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        Self::connect_as(addr, &default_name()).await
    }

    /// Like [`Client::connect`], introducing itself as `name`.
    pub async fn connect_as(addr: &str, name: &str) -> Result<Client, ClientError> {
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
            name: name.to_string(),
        };
        let welcome = proto::connect_handshake(&mut io, &hello)
            .await
            .map_err(|reason| ClientError::Handshake {
                addr: addr.to_string(),
                reason,
            })?;
        let (mut writer, mut reader) = io.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Request>();
        tokio::spawn(async move {
            while let Some(r) = out_rx.recv().await {
                if writer.send(&r).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let p = pending.clone();
        let reader = tokio::spawn(async move {
            let why = loop {
                match reader.recv_msg::<NodeToClient>().await {
                    Ok(Some(NodeToClient::Response { id, body })) => {
                        if let Some(tx) = lock(&p).get(&id) {
                            let _ = tx.send(body);
                        }
                    }
                    Ok(Some(NodeToClient::Event(e))) => {
                        let _ = ev_tx.send(FeedItem::Event(e));
                    }
                    Ok(Some(NodeToClient::Missed { epoch, from, to })) => {
                        let _ = ev_tx.send(FeedItem::Missed { epoch, from, to });
                    }
                    Ok(None) => break "the node closed the connection".to_string(),
                    Err(e) => break format!("connection to the node failed: {e}"),
                }
            };
            // Dropping the senders wakes every waiting request with `Closed`.
            lock(&p).clear();
            let _ = ev_tx.send(FeedItem::Closed(why));
        });
        Ok(Client {
            out,
            pending,
            next_id: AtomicU64::new(1),
            events: Mutex::new(Some(ev_rx)),
            node_name: welcome.name.clone(),
            welcome,
            reader,
        })
    }

    /// Sends a request; its answers arrive on the returned stream.
    pub fn start(&self, body: ClientRequest) -> Result<Answers, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.pending).insert(id, tx);
        if self.out.send(Request { id, body }).is_err() {
            lock(&self.pending).remove(&id);
            return Err(ClientError::Closed);
        }
        Ok(Answers {
            id,
            rx,
            pending: self.pending.clone(),
        })
    }

    /// Sends a request that gets no answer of its own (upload data).
    pub fn post(&self, body: ClientRequest) -> Result<(), ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.out
            .send(Request { id, body })
            .map_err(|_| ClientError::Closed)
    }

    /// Sends one request and waits for its single answer; errors from the
    /// node become `ClientError::Api`.
    pub async fn call(&self, body: ClientRequest) -> Result<ClientResponse, ClientError> {
        self.start(body)?.next().await
    }

    /// The feed's receiving end (once; `None` after it was taken).
    pub fn events(&self) -> Option<mpsc::UnboundedReceiver<FeedItem>> {
        lock(&self.events).take()
    }

    /// Starts the feed, resuming after `after` if given; returns the node's run.
    pub async fn subscribe(&self, after: Option<FeedCursor>) -> Result<u64, ClientError> {
        match self.call(ClientRequest::Subscribe { after }).await? {
            ClientResponse::Subscribed { epoch } => Ok(epoch),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Proves the identity in `file`, or registers a new one there when the
    /// file does not exist yet.
    pub async fn authenticate(&self, file: &Path, name: &str) -> Result<Identity, ClientError> {
        match Identity::load(file)? {
            Some(ident) => {
                let proof =
                    proto::auth_proof(&ident.token, &self.welcome.nonce, self.welcome.node_id);
                self.call(ClientRequest::Login {
                    id: ident.id,
                    name: name.to_string(),
                    proof,
                })
                .await
                .map_err(|e| match e {
                    ClientError::Api(ApiError::BadIdentity(why)) => {
                        ClientError::Identity(format!("{why} (identity file {})", file.display()))
                    }
                    e => e,
                })?;
                Ok(ident)
            }
            None => match self
                .call(ClientRequest::Register {
                    name: name.to_string(),
                })
                .await?
            {
                ClientResponse::Registered { id, token } => {
                    let ident = Identity { id, token };
                    ident.save(file)?;
                    Ok(ident)
                }
                other => Err(ClientError::Identity(format!(
                    "unexpected answer {other:?}"
                ))),
            },
        }
    }

    /// A streamed file table (`List` or `Discover`).
    async fn files(&self, body: ClientRequest) -> Result<Vec<ListedFile>, ClientError> {
        let mut answers = self.start(body)?;
        let mut out = Vec::new();
        loop {
            match answers.next().await? {
                ClientResponse::Files { files, more } => {
                    out.extend(files);
                    if !more {
                        return Ok(out);
                    }
                }
                other => return Err(ClientError::Unexpected(format!("{other:?}"))),
            }
        }
    }

    /// The cluster's file table, sorted by path.
    pub async fn list(&self) -> Result<Vec<ListedFile>, ClientError> {
        self.files(ClientRequest::List).await
    }

    /// One node's own files.
    pub async fn discover(&self, node: &str) -> Result<Vec<ListedFile>, ClientError> {
        self.files(ClientRequest::Discover {
            node: node.to_string(),
        })
        .await
    }
}

/// A client identity as saved on disk (TOML: `id`, `token` in hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The client id.
    pub id: Uuid,
    /// The secret token.
    pub token: [u8; 32],
}

#[derive(serde::Serialize, serde::Deserialize)]
struct IdentityFile {
    id: Uuid,
    token: String,
}

impl Identity {
    /// Reads `file`; `None` if it does not exist.
    pub fn load(file: &Path) -> Result<Option<Identity>, ClientError> {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ClientError::Identity(format!(
                    "cannot read {}: {e}",
                    file.display()
                )));
            }
        };
        let bad = |why: String| {
            ClientError::Identity(format!(
                "{} is not a valid identity file: {why}",
                file.display()
            ))
        };
        let f: IdentityFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let bytes = (0..f.token.len())
            .step_by(2)
            .map(|i| {
                f.token
                    .get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| bad("token is not hex".into()))?;
        let token: [u8; 32] = bytes
            .try_into()
            .map_err(|_| bad("token must be 32 bytes".into()))?;
        Ok(Some(Identity { id: f.id, token }))
    }

    /// Writes `file` atomically, readable by the owner only.
    pub fn save(&self, file: &Path) -> Result<(), ClientError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let fail = |e: std::io::Error| {
            ClientError::Identity(format!("cannot save identity to {}: {e}", file.display()))
        };
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let body = IdentityFile {
            id: self.id,
            token: self.token.iter().map(|b| format!("{b:02x}")).collect(),
        };
        let text = format!(
            "# Tandem client identity. Keep it private: the token proves who you are.\n{}",
            toml::to_string(&body).map_err(|e| ClientError::Identity(e.to_string()))?
        );
        let tmp = file.with_extension("toml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(fail)?;
        f.write_all(text.as_bytes()).map_err(fail)?;
        f.sync_all().map_err(fail)?;
        std::fs::rename(&tmp, file).map_err(fail)?;
        Ok(())
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
