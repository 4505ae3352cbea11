//! The terminal UI's event loop: terminal events, the node's answers and a
//! clock become [`Msg`]s for the pure [`update`]; the [`Effect`]s it
//! returns become requests to the node, whose results come back as `Msg`s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use crossterm::event::{Event as TermEvent, EventStream};
use futures::StreamExt;
use ratatui::DefaultTerminal;
use tandem_common::RelPath;
use tandem_common::buffers::{KEEP_IDLE, SEGMENTS};
use tandem_common::proto::{ApiError, ClientRequest, ClientResponse};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio_util::sync::CancellationToken;

use crate::app::{AppState, Effect, FetchError, Msg, RestoreError, Saved, Wanted, Zone, update};
use crate::client::{Client, ClientError, FeedItem};
use crate::{term, ui};

/// Redraws at least this often (clock, reconnect countdown).
const TICK: Duration = Duration::from_millis(250);
/// Give up a connection attempt after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages handled before the next frame is drawn, at most.
const BATCH: usize = 1024;

/// Runs the full-screen UI on the node at `node` until the user quits.
/// `name` is how the client introduces itself. Needs the multi-thread
/// tokio runtime.
pub async fn run_ui(node: String, name: String) -> anyhow::Result<()> {
    if tokio::runtime::Handle::current().runtime_flavor()
        != tokio::runtime::RuntimeFlavor::MultiThread
    {
        bail!("the terminal UI needs tokio's multi-thread runtime");
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let mut terminal =
        term::init().context("cannot start the terminal UI (is this a terminal?)")?;
    let result = event_loop(&mut terminal, node, name, cwd).await;
    term::restore();
    result
}

/// Nanoseconds since the Unix epoch, now.
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What background tasks send the loop.
enum Incoming {
    /// A message for `update`.
    Msg(Msg),
    /// Connection attempt `generation` succeeded.
    Connected { generation: u64, client: Client },
    /// Connection `generation` ended.
    Lost { generation: u64, reason: String },
    /// A message from a task of connection (attempt) `generation`.
    Answer { generation: u64, msg: Msg },
}

/// Whether `m` reports on the connected node (a table, a report, its feed,
/// a failed attempt): from an older connection it would be taken for the
/// current node's. Results of the user's own actions (lock, fetch,
/// restore…) are reported whichever node did them.
fn about_the_node(m: &Msg) -> bool {
    matches!(
        m,
        Msg::Subscribed(_)
            | Msg::ListLoaded { .. }
            | Msg::CacheLoaded(_)
            | Msg::NodesLoaded(_)
            | Msg::ConflictsLoaded(_)
            | Msg::Discovered { .. }
            | Msg::DetailLoaded { .. }
            | Msg::Event(_)
            | Msg::Missed { .. }
            | Msg::ConnectFailed { .. }
    )
}

async fn event_loop(
    terminal: &mut DefaultTerminal,
    node: String,
    name: String,
    cwd: PathBuf,
) -> anyhow::Result<()> {
    let size = terminal.size()?;
    let mut state = AppState::new(&node, Zone::Local, cwd, now_ns(), (size.width, size.height));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut runner = Runner {
        node,
        name,
        tx,
        conn: None,
        generation: 0,
        fetch_cancel: None,
    };
    // Raw mode is on (term::init): only now is EventStream safe to create.
    let mut input = EventStream::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = state.start();
    if runner.run_all(start) {
        return Ok(());
    }
    loop {
        terminal
            .draw(|f| ui::render(f, &state))
            .context("cannot draw")?;
        let first = tokio::select! {
            ev = input.next() => match ev {
                Some(Ok(ev)) => match translate(ev) {
                    Some(m) => Incoming::Msg(m),
                    None => continue,
                },
                Some(Err(e)) => return Err(e).context("cannot read the terminal"),
                None => return Ok(()),
            },
            inc = rx.recv() => match inc {
                Some(i) => i,
                None => continue,
            },
            _ = tick.tick() => {
                // A fetch's chunks came through kept buffers: let them go
                // once no fetch has used them for a while.
                if SEGMENTS.release_idle(KEEP_IDLE) > 0 {
                    crate::memory::release_memory();
                }
                Incoming::Msg(Msg::Tick(now_ns()))
            }
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(i) => batch.push(i),
                Err(_) => break,
            }
        }
        for inc in batch {
            let Some(msg) = runner.accept(inc) else {
                continue;
            };
            let table = matches!(msg, Msg::ListLoaded { result: Ok(_), .. });
            let effects = update(&mut state, msg);
            if table {
                // The old table was just dropped, and the new one grew in
                // steps whose old buffers are free now: give them back
                // (the heap keeps up to 128 MiB free otherwise).
                crate::memory::release_memory();
            }
            if runner.run_all(effects) {
                return Ok(());
            }
        }
    }
}

fn translate(ev: TermEvent) -> Option<Msg> {
    match ev {
        TermEvent::Key(k) => Some(Msg::Key(k)),
        TermEvent::Mouse(m) => Some(Msg::Mouse(m)),
        TermEvent::Resize(w, h) => Some(Msg::Resize(w, h)),
        _ => None,
    }
}

/// The live connection.
struct Live {
    client: Arc<Client>,
}

/// Carries out effects; owns the connection.
struct Runner {
    node: String,
    name: String,
    tx: UnboundedSender<Incoming>,
    conn: Option<Live>,
    /// Bumped on each attempt, so a late answer of an old one is ignored.
    generation: u64,
    /// Stops the fetch under way (the state allows one at a time).
    fetch_cancel: Option<CancellationToken>,
}

impl Runner {
    /// Turns what a task sent into a message, handling connections.
    fn accept(&mut self, inc: Incoming) -> Option<Msg> {
        match inc {
            Incoming::Msg(m) => Some(m),
            Incoming::Answer { generation, msg } => {
                (generation == self.generation || !about_the_node(&msg)).then_some(msg)
            }
            Incoming::Connected { generation, client } => {
                if generation != self.generation {
                    return None;
                }
                let node_name = client.node_name.clone();
                if let Some(events) = client.events() {
                    spawn_feed_pump(events, self.tx.clone(), generation);
                }
                self.conn = Some(Live {
                    client: Arc::new(client),
                });
                Some(Msg::Connected {
                    node_name,
                    now: now_ns(),
                })
            }
            Incoming::Lost { generation, reason } => {
                if generation != self.generation || self.conn.is_none() {
                    return None;
                }
                self.conn = None;
                Some(Msg::ConnectionLost {
                    reason,
                    now: now_ns(),
                })
            }
        }
    }

    /// Runs `effects`; `true` means quit.
    fn run_all(&mut self, effects: Vec<Effect>) -> bool {
        for e in effects {
            if e == Effect::Quit {
                return true;
            }
            self.run(e);
        }
        false
    }

    fn send(&self, m: Msg) {
        let _ = self.tx.send(Incoming::Msg(m));
    }

    fn run(&mut self, e: Effect) {
        if let Effect::SwitchNode(addr) = &e {
            // The old connection (and its feed) is dropped; reports still
            // on their way belong to the old generation and are dropped
            // (see `about_the_node`).
            self.node = addr.clone();
            self.conn = None;
            return self.run(Effect::Connect);
        }
        if e == Effect::Connect {
            self.generation += 1;
            let (generation, node, name, tx) = (
                self.generation,
                self.node.clone(),
                self.name.clone(),
                self.tx.clone(),
            );
            tokio::spawn(async move {
                let r =
                    tokio::time::timeout(CONNECT_TIMEOUT, Client::connect_as(&node, &name)).await;
                let inc = match r {
                    Ok(Ok(client)) => Incoming::Connected { generation, client },
                    Ok(Err(e)) => Incoming::Answer {
                        generation,
                        msg: Msg::ConnectFailed {
                            reason: short_reason(&e),
                            now: now_ns(),
                        },
                    },
                    Err(_) => Incoming::Answer {
                        generation,
                        msg: Msg::ConnectFailed {
                            reason: "no answer in 5 s".into(),
                            now: now_ns(),
                        },
                    },
                };
                let _ = tx.send(inc);
            });
            return;
        }
        if e == Effect::CancelFetch {
            // The fetch task sees it, removes its partial file and answers
            // with `FetchDone(Err(Cancelled))`.
            if let Some(token) = &self.fetch_cancel {
                token.cancel();
            }
            return;
        }
        let Some(live) = &self.conn else {
            self.not_connected(e);
            return;
        };
        let c = live.client.clone();
        let tx = self.tx.clone();
        let generation = self.generation;
        let send = move |msg: Msg| {
            let _ = tx.send(Incoming::Answer { generation, msg });
        };
        match e {
            Effect::Connect | Effect::Quit | Effect::SwitchNode(_) | Effect::CancelFetch => {}
            Effect::Subscribe(cursor) => {
                tokio::spawn(async move {
                    send(Msg::Subscribed(
                        c.subscribe(cursor).await.map_err(|e| e.to_string()),
                    ));
                });
            }
            Effect::RefreshList => {
                tokio::spawn(async move {
                    let result = rows_of(&c, ClientRequest::List).await;
                    send(Msg::ListLoaded {
                        result,
                        now: now_ns(),
                    });
                });
            }
            Effect::RefreshCache | Effect::RefreshCacheOf(_) => {
                let node = match e {
                    Effect::RefreshCacheOf(n) => Some(n),
                    _ => None,
                };
                tokio::spawn(async move {
                    let r = match c.call(ClientRequest::Cache { node }).await {
                        Ok(ClientResponse::CacheReport(r)) => Ok(r),
                        Ok(other) => Err(unexpected(&other)),
                        Err(e) => Err(e.to_string()),
                    };
                    send(Msg::CacheLoaded(r));
                });
            }
            Effect::RefreshNodes => {
                tokio::spawn(async move {
                    let r = match c.call(ClientRequest::Nodes).await {
                        Ok(ClientResponse::NodeList(v)) => Ok(v),
                        Ok(other) => Err(unexpected(&other)),
                        Err(e) => Err(e.to_string()),
                    };
                    send(Msg::NodesLoaded(r));
                });
            }
            Effect::RefreshConflicts => {
                tokio::spawn(async move {
                    let r = match c.call(ClientRequest::Conflicts).await {
                        Ok(ClientResponse::ConflictList {
                            copies,
                            mut unanswered,
                            not_listed,
                        }) => {
                            if not_listed > 0 {
                                unanswered.push(crate::conflicts::not_listed(not_listed));
                            }
                            Ok((copies, unanswered))
                        }
                        Ok(other) => Err(unexpected(&other)),
                        Err(e) => Err(e.to_string()),
                    };
                    send(Msg::ConflictsLoaded(r));
                });
            }
            Effect::ResolveConflict { node, id, action } => {
                tokio::spawn(async move {
                    let req = ClientRequest::ResolveConflict { node, id, action };
                    let r = match c.call(req).await {
                        Ok(ClientResponse::ConflictResolved(r)) => Ok(r),
                        Ok(other) => Err(unexpected(&other)),
                        Err(e) => Err(e.to_string()),
                    };
                    send(Msg::ConflictResolved(r));
                });
            }
            Effect::RestoreVersion { node, id, path } => {
                tokio::spawn(async move {
                    let req = ClientRequest::RestoreVersion {
                        node: node.clone(),
                        id,
                    };
                    let result = match c.call(req).await {
                        Ok(ClientResponse::VersionRestored(r)) => Ok(r),
                        Ok(other) => Err(RestoreError::Failed(unexpected(&other))),
                        Err(ClientError::Api(ApiError::NoSuchVersion { .. })) => {
                            Err(RestoreError::Gone)
                        }
                        Err(e) => Err(RestoreError::Failed(e.to_string())),
                    };
                    send(Msg::VersionRestored { node, path, result });
                });
            }
            Effect::Mirror { revert, path } => {
                tokio::spawn(async move {
                    let req = if revert {
                        ClientRequest::Revert { path }
                    } else {
                        ClientRequest::Override { path }
                    };
                    let result = match c.call(req).await {
                        Ok(ClientResponse::Mirrored(r)) => Ok(r),
                        Ok(other) => Err(unexpected(&other)),
                        Err(e) => Err(e.to_string()),
                    };
                    send(Msg::Mirrored { revert, result });
                });
            }
            Effect::LoadDetail(path) => {
                tokio::spawn(async move {
                    let result = file_detail(&c, &path).await;
                    send(Msg::DetailLoaded { path, result });
                });
            }
            Effect::Discover(node) => {
                tokio::spawn(async move {
                    let body = ClientRequest::Discover { node: node.clone() };
                    let result = rows_of(&c, body).await;
                    send(Msg::Discovered { node, result });
                });
            }
            Effect::Lock(path) => {
                tokio::spawn(async move {
                    let r = async { lock(&c, path).await }.await;
                    send(Msg::LockDone(r));
                });
            }
            Effect::LockWait(path) => {
                let (node, name) = (self.node.clone(), self.name.clone());
                tokio::spawn(async move {
                    let r = lock_wait(&node, &name, path, &send).await;
                    send(Msg::LockDone(r));
                });
            }
            Effect::Unlock { path, force } => {
                tokio::spawn(async move {
                    let r = async {
                        match c.call(ClientRequest::Unlock { path, force }).await {
                            Ok(ClientResponse::Unlocked { lock, released, .. }) => {
                                Ok((lock.path, lock.owner_name, released.len()))
                            }
                            Ok(other) => Err(unexpected(&other)),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    .await;
                    send(Msg::UnlockDone(r));
                });
            }
            Effect::Fetch { what, dest, force } => {
                let token = CancellationToken::new();
                self.fetch_cancel = Some(token.clone());
                let (node, name) = (self.node.clone(), self.name.clone());
                tokio::spawn(async move {
                    let r =
                        fetch_on_own_connection(&node, &name, &what, &dest, force, &token, &send)
                            .await;
                    send(Msg::FetchDone(r));
                });
            }
        }
    }

    /// Answers an effect that needs the node while there is none, so the
    /// state does not wait for it.
    fn not_connected(&self, e: Effect) {
        let why = || format!("not connected to {}", self.node);
        match e {
            Effect::RefreshList => self.send(Msg::ListLoaded {
                result: Err(why()),
                now: now_ns(),
            }),
            Effect::RefreshCache | Effect::RefreshCacheOf(_) => {
                self.send(Msg::CacheLoaded(Err(why())))
            }
            Effect::RefreshNodes => self.send(Msg::NodesLoaded(Err(why()))),
            Effect::RefreshConflicts => self.send(Msg::ConflictsLoaded(Err(why()))),
            Effect::LoadDetail(path) => self.send(Msg::DetailLoaded {
                path,
                result: Err(why()),
            }),
            Effect::ResolveConflict { .. } => self.send(Msg::ConflictResolved(Err(why()))),
            Effect::Mirror { revert, .. } => self.send(Msg::Mirrored {
                revert,
                result: Err(why()),
            }),
            Effect::RestoreVersion { node, path, .. } => self.send(Msg::VersionRestored {
                node,
                path,
                result: Err(RestoreError::Failed(why())),
            }),
            Effect::Discover(node) => self.send(Msg::Discovered {
                node,
                result: Err(why()),
            }),
            Effect::Lock(_) | Effect::LockWait(_) => self.send(Msg::LockDone(Err(why()))),
            Effect::Unlock { .. } => self.send(Msg::UnlockDone(Err(why()))),
            Effect::Fetch { .. } => self.send(Msg::FetchDone(Err(FetchError::Failed(why())))),
            Effect::Subscribe(_)
            | Effect::Connect
            | Effect::Quit
            | Effect::SwitchNode(_)
            | Effect::CancelFetch => {}
        }
    }
}

/// What the detail pane shows of `path` beyond its row: asked of the
/// node at once (the lock table, the held changes, the conflict copies,
/// the kept versions).
async fn file_detail(c: &Client, path: &RelPath) -> Result<crate::app::FileDetail, String> {
    let (locks, held, conflicts, versions) = tokio::join!(
        c.call(ClientRequest::Locks),
        c.call(ClientRequest::Held),
        c.call(ClientRequest::Conflicts),
        crate::versions::kept_versions(c, path)
    );
    let lock = match locks.map_err(|e| e.to_string())? {
        ClientResponse::LockList(v) => v.into_iter().find(|l| &l.path == path),
        other => return Err(unexpected(&other)),
    };
    let held = match held.map_err(|e| e.to_string())? {
        ClientResponse::HeldList(v) => v.into_iter().filter(|h| &h.path == path).collect(),
        other => return Err(unexpected(&other)),
    };
    let (conflicts, unanswered) = match conflicts.map_err(|e| e.to_string())? {
        ClientResponse::ConflictList {
            copies, unanswered, ..
        } => (
            copies
                .into_iter()
                .filter(|c| c.path.as_ref() == Some(path))
                .collect(),
            unanswered,
        ),
        other => return Err(unexpected(&other)),
    };
    let (versions, versions_unanswered) = versions.map_err(|e| e.to_string())?;
    Ok(crate::app::FileDetail {
        lock,
        held,
        conflicts,
        unanswered,
        versions,
        versions_unanswered,
    })
}

/// The connect error without the long hint meant for the command line.
fn short_reason(e: &ClientError) -> String {
    match e {
        ClientError::Connect { reason, .. } => reason.to_string(),
        e => e.to_string(),
    }
}

fn unexpected(r: &ClientResponse) -> String {
    let s = format!("{r:?}");
    format!(
        "unexpected answer from the node: {}",
        s.chars().take(80).collect::<String>()
    )
}

fn spawn_feed_pump(
    mut events: mpsc::UnboundedReceiver<FeedItem>,
    tx: UnboundedSender<Incoming>,
    generation: u64,
) {
    tokio::spawn(async move {
        while let Some(item) = events.recv().await {
            let inc = match item {
                FeedItem::Event(e) => Incoming::Answer {
                    generation,
                    msg: Msg::Event(e),
                },
                FeedItem::Missed { epoch, from, to } => Incoming::Answer {
                    generation,
                    msg: Msg::Missed {
                        epoch,
                        from,
                        to,
                        now: now_ns(),
                    },
                },
                FeedItem::Closed(reason) => {
                    let _ = tx.send(Incoming::Lost { generation, reason });
                    return;
                }
            };
            if tx.send(inc).is_err() {
                return;
            }
        }
        let _ = tx.send(Incoming::Lost {
            generation,
            reason: "the node closed the connection".into(),
        });
    });
}

/// Locks `path` (refused at once when someone holds it).
async fn lock(c: &Client, path: RelPath) -> Result<(RelPath, String), String> {
    match c.call(ClientRequest::Lock { path, wait: false }).await {
        Ok(ClientResponse::Locked(l)) => Ok((l.path, l.owner_name)),
        Ok(other) => Err(unexpected(&other)),
        Err(e) => Err(e.to_string()),
    }
}

/// Locks `path` or waits in its queue, on a connection of its own (the
/// node takes anything else sent on a waiting connection, or its closing,
/// as giving up the place): reports the place, then returns once granted.
async fn lock_wait(
    node: &str,
    name: &str,
    path: RelPath,
    send: &(impl Fn(Msg) + Send + Sync),
) -> Result<(RelPath, String), String> {
    let c = Client::connect_as(node, name)
        .await
        .map_err(|e| e.to_string())?;
    let queued = c
        .call(ClientRequest::Lock {
            path: path.clone(),
            wait: true,
        })
        .await
        .map_err(|e| e.to_string())?;
    let granted = match queued {
        ClientResponse::Locked(l) => l,
        ClientResponse::Queued { lock, position } => {
            send(Msg::LockQueued {
                path: path.clone(),
                holder: lock.owner_name,
                position,
            });
            let mut answers = c
                .start(ClientRequest::AwaitLock { path })
                .map_err(|e| e.to_string())?;
            match answers.next_untimed().await.map_err(|e| e.to_string())? {
                ClientResponse::Locked(l) => l,
                other => return Err(unexpected(&other)),
            }
        }
        other => return Err(unexpected(&other)),
    };
    Ok((granted.path, granted.owner_name))
}

fn expand_home(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_path_buf(),
    }
}

/// Downloads `what` into the directory `dest` (see [`crate::transfer::fetch`])
/// on a connection of its own, so that cancelling (`cancel`) can close it
/// and the node stops sending (it serves a fetch to its end otherwise,
/// and the UI's connection would carry the rest of the file). Missing
/// folders of `dest` are made, and removed again if nothing was saved.
/// Progress comes as messages (about 200 steps).
async fn fetch_on_own_connection(
    node: &str,
    name: &str,
    what: &Wanted,
    dest: &Path,
    force: bool,
    cancel: &CancellationToken,
    send: &(impl Fn(Msg) + Sync),
) -> Result<Saved, FetchError> {
    let dest = expand_home(dest);
    let made = make_folders(&dest).map_err(FetchError::Failed)?;
    let r = async {
        let c = tokio::select! {
            () = cancel.cancelled() => return Err(FetchError::Cancelled),
            c = tokio::time::timeout(CONNECT_TIMEOUT, Client::connect_as(node, name)) => match c {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(FetchError::Failed(short_reason(&e))),
                Err(_) => return Err(FetchError::Failed(format!(
                    "{node} did not answer within {}; try again",
                    tandem_common::display::duration(CONNECT_TIMEOUT)
                ))),
            },
        };
        fetch_reporting(&c, what, &dest, force, cancel, send).await
    }
    .await;
    match r {
        Ok(to) => Ok(Saved {
            to,
            made: made.first().cloned(),
        }),
        Err(e) => {
            // Innermost first; a folder something else put a file in stays.
            for dir in made.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
            Err(e)
        }
    }
}

/// Makes `dir` and any missing folders above it; the ones it made,
/// outermost first.
fn make_folders(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || std::fs::symlink_metadata(d).is_ok() {
            break;
        }
        missing.push(d.to_path_buf());
        at = d.parent();
    }
    missing.reverse();
    std::fs::create_dir_all(dir).map_err(|e| {
        format!(
            "cannot make the folder {}: {e}; choose another folder",
            dir.display()
        )
    })?;
    Ok(missing)
}

/// Fetches with progress as messages; a file already in `dest` (without
/// `force`) and a cancel come back as their own [`FetchError`]s.
async fn fetch_reporting(
    c: &Client,
    what: &Wanted,
    dest: &Path,
    force: bool,
    cancel: &CancellationToken,
    progress: &(impl Fn(Msg) + Sync),
) -> Result<PathBuf, FetchError> {
    let (mut total, mut shown) = (0u64, 0u64);
    let mut on_progress = |p: crate::transfer::FetchProgress<'_>| match p {
        crate::transfer::FetchProgress::Started(file, from) => {
            total = file.size;
            shown = 0;
            progress(Msg::FetchStarted {
                total,
                from: from.to_string(),
                now: now_ns(),
            });
        }
        crate::transfer::FetchProgress::Received(done) => {
            if done == total || done - shown >= (total / 200).max(1) {
                shown = done;
                progress(Msg::FetchProgress {
                    done,
                    now: now_ns(),
                });
            }
        }
    };
    crate::transfer::fetch(c, what, dest, force, Some(cancel), &mut on_progress)
        .await
        .map(|f| f.dest)
        .map_err(|e| match e.downcast::<crate::transfer::WouldOverwrite>() {
            Ok(crate::transfer::WouldOverwrite(there)) => FetchError::Exists(there),
            Err(e) if e.is::<crate::transfer::Cancelled>() => FetchError::Cancelled,
            Err(e) => FetchError::Failed(format!("{e:#}")),
        })
}

/// A table the node streams (`List` or `Discover`), taken in compactly page
/// by page as it arrives: a million rows never exist whole here.
async fn rows_of(c: &Client, body: ClientRequest) -> Result<crate::app::Rows, String> {
    let mut rows = crate::app::Rows::default();
    c.files_each(body, |page| {
        rows.extend(page);
        Ok(())
    })
    .await
    .map(|()| rows)
    .map_err(|e| e.to_string())
}
