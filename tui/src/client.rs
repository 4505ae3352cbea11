//! The async client library shared by the one-shot subcommands and (later)
//! the terminal UI: connect, handshake, request/response.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tandem_common::NodeId;
use tandem_common::codec::{CodecError, FrameIo};
use tandem_common::identity::KeyPair;
use tandem_common::proto::{
    self, Access, ApiError, ClientRequest, ClientResponse, Event, FeedCursor, HandshakeError,
    Hello, ListedFile, NodeToClient, Request, Role,
};
use tandem_common::tls::Tls;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

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
    /// What arrived could not be written out (a closed pipe, a full disk).
    #[error("cannot write what the node sent: {0}")]
    Output(#[source] std::io::Error),
    /// The identity file could not be used.
    #[error("{0}")]
    Identity(String),
    /// TLS failed.
    #[error(
        "secure connection to {addr} failed: {reason} (is it a Tandem node of the same release?)"
    )]
    Tls {
        /// Where.
        addr: String,
        /// Why.
        reason: std::io::Error,
    },
    /// The node proved another id than the one expected.
    #[error(
        "the node at {addr} proved id {now}, but {expected}; this may be another machine or something in the middle. If the node was reinstalled on purpose, {fix}"
    )]
    WrongNode {
        /// Where.
        addr: String,
        /// What it proved.
        now: NodeId,
        /// What was expected, in words.
        expected: String,
        /// How to accept the new id.
        fix: String,
    },
    /// Nothing at the address finished a Tandem handshake in time: a
    /// listener that never answers, a host that drops the connection
    /// attempt, or a node too busy to say hello.
    #[error(
        "{addr} did not answer as a Tandem node within {}; check the address (--node or TANDEM_NODE), or raise --timeout for a slow link",
        tandem_common::display::duration(*after)
    )]
    NoAnswer {
        /// Where.
        addr: String,
        /// How long it was given.
        after: Duration,
    },
    /// Something answered at the address, but not as a Tandem node does.
    #[error("{addr} is not a Tandem node: {what}; check the address (--node or TANDEM_NODE)")]
    NotANode {
        /// Where.
        addr: String,
        /// What it did instead.
        what: String,
    },
    /// The other side closed the connection before the secure handshake.
    #[error(
        "{addr} closed the connection before the secure handshake; a Tandem node does that when all its connections are in use (try again later), anything else is not a Tandem node (check --node or TANDEM_NODE)"
    )]
    ClosedEarly {
        /// Where.
        addr: String,
    },
    /// A node that is connected did not answer a request in time.
    #[error(
        "node {node} ({addr}) did not answer within {}; raise --timeout for a slow link or a big cluster",
        tandem_common::display::duration(*after)
    )]
    Timeout {
        /// The node's name.
        node: String,
        /// Where.
        addr: String,
        /// How long it was given.
        after: Duration,
    },
}

/// Judges a failed TLS handshake: garbage where TLS was expected (an HTTP,
/// SSH or other server) means the address is not a Tandem node.
fn tls_failure(addr: &str, reason: std::io::Error) -> ClientError {
    use tokio_rustls::rustls;
    let not_tls = reason
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidMessage(_)));
    if not_tls {
        return ClientError::NotANode {
            addr: addr.to_string(),
            what: "it answered with something that is not TLS (another kind of server?)".into(),
        };
    }
    if matches!(
        reason.kind(),
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
    ) {
        return ClientError::ClosedEarly {
            addr: addr.to_string(),
        };
    }
    ClientError::Tls {
        addr: addr.to_string(),
        reason,
    }
}

/// Judges a failed Tandem hello: bytes that are not Tandem frames (a frame
/// "too big", a bad magic, a message that does not decode) mean the other
/// side speaks TLS but not Tandem.
fn hello_failure(addr: &str, reason: HandshakeError) -> ClientError {
    let garbage = match &reason {
        HandshakeError::BadMagic => true,
        HandshakeError::Codec(CodecError::Io(e)) => e.kind() == std::io::ErrorKind::InvalidData,
        HandshakeError::Codec(
            CodecError::Decode(_) | CodecError::Trailing(_) | CodecError::Truncated,
        ) => true,
        _ => false,
    };
    if garbage {
        return ClientError::NotANode {
            addr: addr.to_string(),
            what: "it speaks TLS but answered the hello with something else than Tandem".into(),
        };
    }
    ClientError::Handshake {
        addr: addr.to_string(),
        reason,
    }
}

/// Settings for every connection of this process.
struct Defaults {
    identity: Option<PathBuf>,
    timeout: Duration,
}

static DEFAULTS: OnceLock<Defaults> = OnceLock::new();
static CREDS: OnceLock<Result<Creds, String>> = OnceLock::new();

/// Default answer timeout of a request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sets the identity file (`--identity`) and the request timeout for every
/// later connection; call once, before connecting.
pub fn set_defaults(identity: Option<PathBuf>, timeout: Duration) {
    let _ = DEFAULTS.set(Defaults { identity, timeout });
}

fn timeout() -> Duration {
    DEFAULTS.get().map_or(DEFAULT_TIMEOUT, |d| d.timeout)
}

/// Where this client's key lives: `--identity`, `TANDEM_IDENTITY`, or
/// `~/.config/tandem/client.key`.
pub fn identity_path() -> Result<PathBuf, ClientError> {
    if let Some(p) = DEFAULTS.get().and_then(|d| d.identity.clone()) {
        return Ok(p);
    }
    if let Some(p) = std::env::var_os("TANDEM_IDENTITY") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").ok_or_else(|| {
        ClientError::Identity("HOME is not set; pass --identity FILE or set TANDEM_IDENTITY".into())
    })?;
    Ok(PathBuf::from(home).join(".config/tandem/client.key"))
}

/// This client's key (made on first use, mode 0600) and where the ids of
/// the nodes it has talked to are pinned.
pub struct Creds {
    tls: Tls,
    key_file: PathBuf,
    known: PathBuf,
}

impl Creds {
    fn load() -> Result<Creds, ClientError> {
        let key_file = identity_path()?;
        let (key, _) = KeyPair::load_or_create(&key_file).map_err(|e| {
            ClientError::Identity(format!("{e} (your identity file; see --identity)"))
        })?;
        let tls = Tls::client(&key).map_err(|e| ClientError::Identity(e.to_string()))?;
        let known = std::env::var_os("TANDEM_KNOWN_NODES")
            .map_or_else(|| key_file.with_file_name("known_nodes"), PathBuf::from);
        Ok(Creds {
            tls,
            key_file,
            known,
        })
    }

    /// The process's credentials (loaded once).
    pub fn get() -> Result<&'static Creds, ClientError> {
        CREDS
            .get_or_init(|| Creds::load().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| ClientError::Identity(e.clone()))
    }

    /// This client's id.
    pub fn id(&self) -> uuid::Uuid {
        self.tls.id()
    }

    /// The key file.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// The node id pinned for `addr`, if any.
    fn pinned(&self, addr: &str) -> Option<NodeId> {
        let text = std::fs::read_to_string(&self.known).ok()?;
        text.lines()
            .rev()
            .filter_map(|l| l.split_once(' '))
            .filter(|(a, _)| *a == addr)
            .find_map(|(_, id)| id.trim().parse().ok())
    }

    /// Pins `id` for `addr` (one appended line: concurrent clients do not
    /// tear each other's writes).
    fn pin(&self, addr: &str, id: NodeId) {
        use std::io::Write;
        if let Some(dir) = self.known.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.known)
        {
            let _ = f.write_all(format!("{addr} {id}\n").as_bytes());
        }
    }
}

/// Splits `ID@HOST:PORT` into the id and the address.
fn split_node(addr: &str) -> Result<(Option<NodeId>, &str), ClientError> {
    match addr.rsplit_once('@') {
        Some((id, rest)) => {
            let id = id
                .parse::<NodeId>()
                .map_err(|e| ClientError::Identity(format!("--node {addr:?}: {e}")))?;
            Ok((Some(id), rest))
        }
        None => Ok((None, addr)),
    }
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
    /// The node's proven id.
    pub node_id: NodeId,
    /// This client's id.
    pub my_id: uuid::Uuid,
    /// This client's role when it connected.
    pub role: Option<Access>,
    /// The address it was reached at.
    pub addr: String,
    timeout: Duration,
    reader: tokio::task::JoinHandle<()>,
}

/// The secured connection to a node.
type TlsStream = tokio_rustls::client::TlsStream<tandem_common::tls::Transport<TcpStream>>;

type Pending = Arc<Mutex<HashMap<u64, mpsc::Sender<ClientResponse>>>>;

/// Answers of one request held before it reads them. A request that reads
/// slower than the node sends (a table of a million rows written out as
/// JSON) stops the connection's reader, and so the node, instead of
/// gathering what is sent in memory; a request that stopped reading has
/// dropped its answers and is sent nothing more.
const ANSWERS_BACKLOG: usize = 8;

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
    rx: mpsc::Receiver<ClientResponse>,
    pending: Pending,
    timeout: Duration,
    node: String,
    addr: String,
}

impl Answers {
    /// The next answer; `Closed` if the connection ended, `Timeout` if
    /// none came in time.
    pub async fn next(&mut self) -> Result<ClientResponse, ClientError> {
        match tokio::time::timeout(self.timeout, self.rx.recv()).await {
            Err(_) => Err(ClientError::Timeout {
                node: self.node.clone(),
                addr: self.addr.clone(),
                after: self.timeout,
            }),
            Ok(Some(ClientResponse::Error(e))) => Err(e.into()),
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(ClientError::Closed),
        }
    }
}

impl Answers {
    /// Like [`Answers::next`], waiting as long as it takes (for answers
    /// that come when something happens, like a lock being granted).
    pub async fn next_untimed(&mut self) -> Result<ClientResponse, ClientError> {
        match self.rx.recv().await {
            Some(ClientResponse::Error(e)) => Err(e.into()),
            Some(r) => Ok(r),
            None => Err(ClientError::Closed),
        }
    }
}

#[cfg(test)]
impl Answers {
    /// Answers fed by hand, for tests of what reads them (no connection).
    pub(crate) fn scripted() -> (mpsc::Sender<ClientResponse>, Answers) {
        let (tx, rx) = mpsc::channel(ANSWERS_BACKLOG);
        let answers = Answers {
            id: 0,
            rx,
            pending: Pending::default(),
            timeout: Duration::from_secs(10),
            node: "test".into(),
            addr: "test".into(),
        };
        (tx, answers)
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

    /// Like [`Client::connect`], introducing itself as `name`. `addr` is
    /// HOST:PORT, or ID@HOST:PORT to insist on the node's id; otherwise
    /// the id seen first at an address is pinned and checked afterwards.
    pub async fn connect_as(addr: &str, name: &str) -> Result<Client, ClientError> {
        let creds = Creds::get()?;
        let (want, addr) = split_node(addr)?;
        // One deadline for everything before the node's welcome: resolving,
        // connecting, TLS and the hello. A listener that accepts and never
        // answers (or a host that drops the SYN) ends here, by name.
        let limit = timeout();
        let (io, welcome) = tokio::time::timeout(limit, handshake(creds, want, addr, name))
            .await
            .map_err(|_| ClientError::NoAnswer {
                addr: addr.to_string(),
                after: limit,
            })??;
        let (my_id, role) = welcome.client.unwrap_or((creds.id(), None));
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
                        let tx = lock(&p).get(&id).cloned();
                        if let Some(tx) = tx {
                            // Fails only when the request dropped its answers.
                            let _ = tx.send(body).await;
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
            node_id: welcome.node_id,
            my_id,
            role,
            addr: addr.to_string(),
            timeout: timeout(),
            reader,
        })
    }

    /// Sends a request; its answers arrive on the returned stream.
    pub fn start(&self, body: ClientRequest) -> Result<Answers, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(ANSWERS_BACKLOG);
        lock(&self.pending).insert(id, tx);
        if self.out.send(Request { id, body }).is_err() {
            lock(&self.pending).remove(&id);
            return Err(ClientError::Closed);
        }
        Ok(Answers {
            id,
            rx,
            pending: self.pending.clone(),
            timeout: self.timeout,
            node: self.node_name.clone(),
            addr: self.addr.clone(),
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

    /// A streamed file table (`List` or `Discover`), handed to `each` a
    /// page at a time as it arrives; an error from `each` ends it.
    pub(crate) async fn files_each(
        &self,
        body: ClientRequest,
        mut each: impl FnMut(Vec<ListedFile>) -> std::io::Result<()>,
    ) -> Result<(), ClientError> {
        let mut answers = self.start(body)?;
        loop {
            match answers.next().await? {
                ClientResponse::Files { files, more } => {
                    each(files).map_err(ClientError::Output)?;
                    if !more {
                        return Ok(());
                    }
                }
                other => return Err(ClientError::Unexpected(format!("{other:?}"))),
            }
        }
    }

    /// The cluster's file table, sorted by path, a page at a time.
    pub async fn list_each(
        &self,
        each: impl FnMut(Vec<ListedFile>) -> std::io::Result<()>,
    ) -> Result<(), ClientError> {
        self.files_each(ClientRequest::List, each).await
    }

    /// One node's own files, sorted by path, a page at a time.
    pub async fn discover_each(
        &self,
        node: &str,
        each: impl FnMut(Vec<ListedFile>) -> std::io::Result<()>,
    ) -> Result<(), ClientError> {
        let body = ClientRequest::Discover {
            node: node.to_string(),
        };
        self.files_each(body, each).await
    }
}

/// Resolves `addr`, connects, runs TLS (checking the id the node proves
/// against `want` and the pinned one) and the hello.
async fn handshake(
    creds: &Creds,
    want: Option<NodeId>,
    addr: &str,
    name: &str,
) -> Result<(FrameIo<TlsStream>, proto::Welcomed), ClientError> {
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
    let (stream, proven) = creds
        .tls
        .connect(stream)
        .await
        .map_err(|reason| tls_failure(addr, reason))?;
    let proven = NodeId(proven);
    // Judged before anything is sent.
    match (want, creds.pinned(addr)) {
        (Some(w), _) if w != proven => {
            return Err(ClientError::WrongNode {
                addr: addr.to_string(),
                now: proven,
                expected: format!("you asked for {w}"),
                fix: "check the id with `tandem-node --dir DIR id` on that machine".into(),
            });
        }
        (None, Some(p)) if p != proven => {
            return Err(ClientError::WrongNode {
                addr: addr.to_string(),
                now: proven,
                expected: format!("it proved {p} before"),
                fix: format!(
                    "remove the line for {addr} from {} or connect with --node {proven}@{addr}",
                    creds.known.display()
                ),
            });
        }
        _ => {}
    }
    let mut io = FrameIo::new(stream);
    let hello = Hello {
        role: Role::Client,
        name: name.to_string(),
    };
    let welcome = proto::connect_handshake(&mut io, &hello)
        .await
        .map_err(|reason| hello_failure(addr, reason))?;
    // Pinned once it answered as a Tandem node (not for whatever TLS
    // server happened to be at the address).
    if creds.pinned(addr).is_none() {
        creds.pin(addr, proven);
    }
    Ok((io, welcome))
}

/// `user@host`, the default display name of a client.
pub fn default_name() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}
