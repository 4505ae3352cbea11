//! The cluster as clients see it: the merged file table, the node list with
//! round-trip times and clock offsets, and answers to peers' questions. The
//! merge itself is pure ([`merge`], [`merge_ready`]); gathering asks each
//! node for its files a page at a time ([`MergedList`]).
//!
//! Scope: the merged table and the held changes ask every trusted node,
//! through the others when it is not linked here (the mesh forwards the
//! question), so in a chain A–B–C asking A shows C's files and held
//! changes too; a node not linked here whose question went unanswered is
//! left out for 10 s. The node list asks linked peers directly (their
//! round trip) and the other trusted nodes through the mesh. Single rows
//! (for `fetch`, which needs a linked source) ask the linked peers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_common::proto::{
    ApiError, ConflictCopy, FileData, FileState, FileSummary, InlineBlock, KeptVersion, ListedFile,
    NodeFileState, NodeStatus, OpenedCopy, PeerAnswer, PeerError, PeerQuery,
};
use tandem_common::{NodeId, VvOrder};

use crate::core::{CoreHandle, LockMsg, now_ns};
use crate::links::{Answerer, Links};
use crate::metrics::Metrics;

/// Files per answer page (keeps each frame a few MiB).
const FILES_PAGE: usize = 20_000;

/// How long a question that went unanswered keeps a node that is not
/// linked here out of views.
const SKIP_UNANSWERED: Duration = Duration::from_secs(10);

/// The trusted nodes to ask for a view, with how long each may take: all
/// but this one, and but those not linked here that left a question
/// unanswered lately (they are probably down).
fn to_ask(mesh: &crate::mesh::Mesh) -> Vec<(NodeId, Duration)> {
    mesh.trust()
        .members()
        .into_iter()
        .filter(|id| *id != mesh.me())
        .filter_map(|id| {
            if mesh.links().get(&id).is_some() {
                return Some((id, QUERY_TIMEOUT));
            }
            // One not linked here may be down, and nothing says so
            // before the question times out: it gets less time.
            (!mesh.unanswered_within(id, SKIP_UNANSWERED)).then_some((id, FORWARDED_QUERY_TIMEOUT))
        })
        .collect()
}

/// How long a peer has to answer a question.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a question forwarded through other nodes may take.
pub const FORWARDED_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers peers' questions from this node's state.
pub struct NodeAnswerer {
    /// This node's id.
    pub id: NodeId,
    /// The core.
    pub core: CoreHandle,
    /// Figures.
    pub metrics: Arc<Metrics>,
    /// This node's name.
    pub name: String,
    /// This node's listen address.
    pub addr: String,
    /// The file cache.
    pub cache: Arc<crate::cache::FileCache>,
    /// The conflicts folder.
    pub conflicts: std::path::PathBuf,
    /// The versions folder.
    pub versions: std::path::PathBuf,
}

impl NodeAnswerer {
    /// This node's own line of `tandem nodes`.
    pub async fn status(&self) -> Result<NodeStatus, ApiError> {
        let c = self.core.counts().await?;
        Ok(NodeStatus {
            id: Some(self.id),
            name: self.name.clone(),
            addr: self.addr.clone(),
            up: true,
            rtt_us: None,
            files: c.files,
            bytes: c.bytes,
            warnings: c.warnings,
            cpu_percent: self.metrics.cpu_percent(),
            rss: self.metrics.rss(),
            uptime_s: self.metrics.uptime_s(),
            clock_offset_ms: Some(0),
            history: self.metrics.history(),
            pending_files: c.pending_files,
            pending_bytes: c.pending_bytes,
        })
    }
}

/// Most blocks one `PeerQuery::Blocks` asks for: one
/// [`MAX_MESH_READ`](tandem_common::proto::MAX_MESH_READ) of data.
pub const MESH_BLOCKS: usize =
    (tandem_common::proto::MAX_MESH_READ as u64 / tandem_common::model::BLOCK_SIZE) as usize;

impl NodeAnswerer {
    /// This node's kept versions of `path` (or of the files under it).
    pub async fn versions_of(
        &self,
        path: tandem_common::RelPath,
    ) -> Result<Vec<KeptVersion>, ApiError> {
        let (dir, name) = (self.versions.clone(), self.name.clone());
        tokio::task::spawn_blocking(move || crate::versions::of(&dir, &name, &path))
            .await
            .map_err(|e| ApiError::Other(format!("listing versions failed: {e}")))?
            .map_err(|e| ApiError::Other(format!("cannot read the versions folder: {e}")))
    }

    /// One of this node's conflict copies with its content hash (hashing
    /// reads it: off the async threads).
    pub async fn open_conflict(&self, id: String) -> Result<OpenedCopy, ApiError> {
        let (dir, name) = (self.conflicts.clone(), self.name.clone());
        tokio::task::spawn_blocking(move || crate::conflicts::opened(&dir, &name, &id))
            .await
            .map_err(|e| ApiError::Other(format!("reading a conflict copy failed: {e}")))?
    }

    /// Bytes of one of this node's conflict copies.
    pub async fn read_conflict(
        &self,
        id: String,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, ApiError> {
        let (dir, name) = (self.conflicts.clone(), self.name.clone());
        tokio::task::spawn_blocking(move || crate::conflicts::read(&dir, &name, &id, offset, len))
            .await
            .map_err(|e| ApiError::Other(format!("reading a conflict copy failed: {e}")))?
    }
}

impl Answerer for NodeAnswerer {
    fn answer(
        &self,
        q: PeerQuery,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<PeerAnswer, ApiError>> + Send + '_>,
    > {
        Box::pin(async move {
            match q {
                PeerQuery::Files { after } => {
                    let (page, more) = self.core.summary_page(after, FILES_PAGE).await?;
                    Ok(PeerAnswer::Files(page, more))
                }
                PeerQuery::Status => Ok(PeerAnswer::Status(self.status().await?, now_ns())),
                PeerQuery::Ping => Ok(PeerAnswer::Pong),
                PeerQuery::Cache => Ok(PeerAnswer::Cache(self.cache.report(&self.name))),
                PeerQuery::File { path } => self.core.summary_of(path).await.map(PeerAnswer::File),
                PeerQuery::Held => self
                    .core
                    .ask_lock(LockMsg::Held)
                    .await
                    .map(PeerAnswer::Held),
                PeerQuery::Conflicts => self
                    .core
                    .conflicts()
                    .await
                    .map(|(v, total)| PeerAnswer::Conflicts(v, total)),
                PeerQuery::ResolveConflict { id, action, by } => Ok(PeerAnswer::ConflictResolved(
                    self.core.resolve_conflict(id, action, by).await,
                )),
                PeerQuery::Versions { path } => {
                    self.versions_of(path).await.map(PeerAnswer::Versions)
                }
                PeerQuery::RestoreVersion { id, by } => Ok(PeerAnswer::VersionRestored(
                    self.core.restore_version(id, by).await,
                )),
                PeerQuery::OpenConflict { id } => {
                    Ok(PeerAnswer::ConflictOpened(self.open_conflict(id).await))
                }
                PeerQuery::ReadConflict { id, offset, len } => Ok(PeerAnswer::ConflictData(
                    self.read_conflict(id, offset, len).await.map(FileData),
                )),
                PeerQuery::Blocks { path, hash, blocks } => {
                    if blocks.len() > MESH_BLOCKS {
                        return Ok(PeerAnswer::Blocks(Err(PeerError::BadRequest(format!(
                            "at most {MESH_BLOCKS} blocks per request"
                        )))));
                    }
                    let got =
                        crate::peer::serve_blocks(&self.core, path, hash, blocks, Vec::new(), true)
                            .await;
                    Ok(PeerAnswer::Blocks(got.map(|b| {
                        b.into_iter()
                            .map(|b| InlineBlock {
                                index: b.index,
                                data: FileData(b.bytes.to_vec()),
                            })
                            .collect()
                    })))
                }
            }
        })
    }
}

/// Merges per-node views into one table: per path, the newest version
/// (the one whose version vector dominates; concurrent ones by the
/// conflict rule), the nodes holding it, and each node's state.
pub fn merge(views: &[(String, Vec<FileSummary>)]) -> Vec<ListedFile> {
    let mut by_path: BTreeMap<&tandem_common::RelPath, Vec<(&str, &FileSummary)>> = BTreeMap::new();
    for (node, files) in views {
        for f in files {
            by_path.entry(&f.path).or_default().push((node.as_str(), f));
        }
    }
    let names: Vec<&str> = views.iter().map(|(n, _)| n.as_str()).collect();
    by_path
        .into_iter()
        .filter_map(|(path, cands)| merge_row(path, &cands, &names))
        .collect()
}

/// One row of the merged table: `cands` are the nodes whose views list
/// `path`, `names` every node of the table. `None` for a file only wanted
/// somewhere (nobody has it yet): such files are not listed.
fn merge_row(
    path: &tandem_common::RelPath,
    cands: &[(&str, &FileSummary)],
    names: &[&str],
) -> Option<ListedFile> {
    // A version that differs by its node's mode (declined, or not sent) is
    // not the cluster's: it is the newest only where it is the only one.
    let agreed: Vec<&FileSummary> = cands
        .iter()
        .map(|(_, f)| *f)
        .filter(|f| !f.differs)
        .collect();
    let pool: Vec<&FileSummary> = if agreed.is_empty() {
        cands.iter().map(|(_, f)| *f).collect()
    } else {
        agreed
    };
    let newest = pool
        .into_iter()
        .reduce(|a, b| match b.version.compare(&a.version) {
            VvOrder::After => b,
            VvOrder::Concurrent if (b.mtime_ns, b.hash) > (a.mtime_ns, a.hash) => b,
            _ => a,
        })?;
    let holds =
        |f: &FileSummary| f.present && f.hash == newest.hash && f.mtime_ns == newest.mtime_ns;
    let mut nodes: Vec<String> = cands
        .iter()
        .filter(|(_, f)| holds(f))
        .map(|(n, _)| n.to_string())
        .collect();
    nodes.sort();
    let states: Vec<NodeFileState> = names
        .iter()
        .map(|node| {
            let mine = cands.iter().find(|(n, _)| n == node).map(|(_, f)| *f);
            let state = match mine {
                None => FileState::Missing,
                Some(f) if f.error.is_some() => FileState::Error,
                Some(f) if f.differs => FileState::Differs,
                Some(f) if f.held > 0 => FileState::Held,
                Some(f) if holds(f) => FileState::InSync,
                Some(f) if f.syncing => FileState::Syncing,
                Some(f) if !f.present => FileState::Missing,
                Some(_) => FileState::Stale,
            };
            NodeFileState {
                node: node.to_string(),
                state,
            }
        })
        .collect();
    if nodes.is_empty() && states.iter().all(|s| s.state == FileState::Missing) {
        return None;
    }
    Some(ListedFile {
        link: newest.link.clone(),
        path: path.clone(),
        size: newest.size,
        mtime_ns: newest.mtime_ns,
        hash: newest.hash,
        nodes,
        locked_by: cands.iter().find_map(|(_, f)| f.locked_by.clone()),
        held: cands.iter().map(|(_, f)| f.held).sum(),
        states,
    })
}

/// The merged table, read page by page: every trusted node's files
/// (through the others when it is not linked here) are asked for a page
/// at a time and merged as they arrive, so neither this node nor the
/// table's reader holds a whole table of a million files. Rows come
/// sorted by path. A node whose first page does not come is left out of
/// the table; one that fails later is left out of the rows after that
/// point (both are logged), as a file listing of a changing folder would.
pub struct MergedList<'a> {
    core: &'a CoreHandle,
    mesh: &'a Arc<crate::mesh::Mesh>,
    views: Vec<View>,
    /// One node's own files (`discover`): a node that does not answer is
    /// an error, and files it only wants are not rows.
    one_node: bool,
}

/// One node's files as the merged table reads them.
struct View {
    name: String,
    /// The peer asked and how long it may take; `None` for this node.
    peer: Option<(NodeId, Duration)>,
    /// Read and not merged yet, sorted by path.
    page: std::collections::VecDeque<FileSummary>,
    /// The last path read: the next page starts after it.
    last: Option<tandem_common::RelPath>,
    /// The node has files after `last`.
    more: bool,
}

/// Why a node's page of files was not used.
#[derive(Debug, thiserror::Error)]
enum PageError {
    /// This node's core did not answer (it is shutting down).
    #[error("{0}")]
    Here(ApiError),
    #[error("{0}")]
    Query(String),
    #[error("its answer was not a page of files")]
    Unexpected,
    #[error("its page of files was not sorted after {after:?} (at {at})")]
    Unsorted { after: Option<String>, at: String },
    #[error("it said more files follow a page holding none")]
    EmptyWithMore,
}

impl<'a> MergedList<'a> {
    /// Asks every node for its first page; `name_of` names the peers and
    /// `me` this node.
    pub async fn open(
        core: &'a CoreHandle,
        mesh: &'a Arc<crate::mesh::Mesh>,
        name_of: &(dyn Fn(NodeId) -> String + Sync),
        me: &str,
    ) -> Result<MergedList<'a>, ApiError> {
        let mut views = vec![View {
            name: me.to_string(),
            peer: None,
            page: Default::default(),
            last: None,
            more: true,
        }];
        views.extend(to_ask(mesh).into_iter().map(|(id, wait)| View {
            name: name_of(id),
            peer: Some((id, wait)),
            page: Default::default(),
            last: None,
            more: true,
        }));
        let mut list = MergedList {
            core,
            mesh,
            views,
            one_node: false,
        };
        list.refill(|name, e| {
            tracing::warn!("node {name} could not list its files: {e}");
        })
        .await?;
        Ok(list)
    }

    /// One node's own files: this node's (`peer` `None`) or a trusted
    /// peer's, linked here or not; its name is `name`.
    pub async fn of_node(
        core: &'a CoreHandle,
        mesh: &'a Arc<crate::mesh::Mesh>,
        name: &str,
        peer: Option<NodeId>,
    ) -> Result<MergedList<'a>, ApiError> {
        let mut list = MergedList {
            core,
            mesh,
            views: vec![View {
                name: name.to_string(),
                peer: peer.map(|id| (id, QUERY_TIMEOUT)),
                page: Default::default(),
                last: None,
                more: true,
            }],
            one_node: true,
        };
        list.refill(|_, _| {}).await?;
        Ok(list)
    }

    /// The next rows, in path order; `None` when the table is done.
    pub async fn next_rows(&mut self) -> Result<Option<Vec<ListedFile>>, ApiError> {
        loop {
            self.refill(|name, e| {
                tracing::warn!(
                    "node {name} stopped answering while its files were listed, so rows after this point leave it out: {e}"
                );
            })
            .await?;
            if self.views.iter().all(|v| v.page.is_empty()) {
                return Ok(None);
            }
            let mut rows = merge_ready(&mut self.views);
            if self.one_node {
                rows.retain(|r| !r.nodes.is_empty());
            }
            if !rows.is_empty() {
                return Ok(Some(rows));
            }
        }
    }

    /// Reads the next page of every view that has merged all it read and
    /// has more. A peer that fails is dropped (`dropped` says why); this
    /// node failing, or the one node of `of_node`, is an error.
    async fn refill(&mut self, dropped: impl Fn(&str, &PageError)) -> Result<(), ApiError> {
        let (core, mesh) = (self.core, self.mesh);
        let asks = self
            .views
            .iter()
            .enumerate()
            .filter(|(_, v)| v.more && v.page.is_empty())
            .map(|(i, v)| {
                let (peer, after) = (v.peer, v.last.clone());
                async move {
                    let got = match peer {
                        None => core
                            .summary_page(after, FILES_PAGE)
                            .await
                            .map_err(PageError::Here),
                        Some((id, wait)) => {
                            match mesh.query(id, PeerQuery::Files { after }, wait).await {
                                Ok(PeerAnswer::Files(page, more)) => Ok((page, more)),
                                Ok(_) => Err(PageError::Unexpected),
                                Err(e) => Err(PageError::Query(e)),
                            }
                        }
                    };
                    (i, got)
                }
            });
        let mut failed = Vec::new();
        for (i, got) in futures::future::join_all(asks).await {
            let v = &mut self.views[i];
            match got.and_then(|(page, more)| v.take(page, more)) {
                Ok(()) => {}
                Err(PageError::Here(e)) => return Err(e),
                Err(e) if self.one_node => {
                    return Err(ApiError::Other(format!("{}: {e}", v.name)));
                }
                Err(e) => {
                    dropped(&v.name, &e);
                    failed.push(i);
                }
            }
        }
        for i in failed.into_iter().rev() {
            self.views.remove(i);
        }
        Ok(())
    }
}

/// Merges and takes out of `views` the rows that are complete: those up to
/// the lowest last path read among views that have more, since no later
/// page can hold a smaller path. At least one file is taken when any view
/// holds one.
fn merge_ready(views: &mut [View]) -> Vec<ListedFile> {
    let bound = views
        .iter()
        .filter(|v| v.more)
        .filter_map(|v| v.page.back().map(|f| f.path.clone()))
        .min();
    let owned: Vec<String> = views.iter().map(|v| v.name.clone()).collect();
    let names: Vec<&str> = owned.iter().map(String::as_str).collect();
    let mut rows = Vec::new();
    loop {
        let Some(path) = views
            .iter()
            .filter_map(|v| v.page.front().map(|f| &f.path))
            .min()
            .cloned()
        else {
            return rows;
        };
        if bound.as_ref().is_some_and(|b| path > *b) {
            return rows;
        }
        let mut taken: Vec<(usize, FileSummary)> = Vec::new();
        for (i, v) in views.iter_mut().enumerate() {
            if v.page.front().is_some_and(|f| f.path == path) {
                taken.extend(v.page.pop_front().map(|f| (i, f)));
            }
        }
        let cands: Vec<(&str, &FileSummary)> = taken.iter().map(|(i, f)| (names[*i], f)).collect();
        rows.extend(merge_row(&path, &cands, &names));
    }
}

impl View {
    /// Takes a page read from this view's node, checked to come after what
    /// was read before and in order (a merge of pages out of order would
    /// list a path twice or not at all).
    fn take(&mut self, page: Vec<FileSummary>, more: bool) -> Result<(), PageError> {
        if more && page.is_empty() {
            return Err(PageError::EmptyWithMore);
        }
        let mut prev = self.last.as_ref();
        for f in &page {
            if prev.is_some_and(|p| f.path <= *p) {
                return Err(PageError::Unsorted {
                    after: prev.map(|p| p.to_string()),
                    at: f.path.to_string(),
                });
            }
            prev = Some(&f.path);
        }
        self.last = page.last().map(|f| f.path.clone()).or(self.last.take());
        self.page = page.into();
        self.more = more;
        Ok(())
    }
}

/// One row of the merged table, asking every trusted node about that path
/// only (through the others when it is not linked here): what `fetch`
/// needs. Each holder is named with its id, so the fetch can ask it.
pub async fn merged_row(
    core: &CoreHandle,
    mesh: &Arc<crate::mesh::Mesh>,
    name_of: &(dyn Fn(NodeId) -> String + Sync),
    me: &str,
    path: &tandem_common::RelPath,
) -> Result<Option<(ListedFile, Vec<(String, NodeId)>)>, ApiError> {
    let own = core.summary_of(path.clone()).await?;
    let mut views = vec![(me.to_string(), own.into_iter().collect::<Vec<_>>())];
    let mut ids = vec![(me.to_string(), mesh.me())];
    let asks = to_ask(mesh).into_iter().map(|(id, wait)| async move {
        let q = PeerQuery::File { path: path.clone() };
        (id, mesh.query(id, q, wait).await)
    });
    for (id, r) in futures::future::join_all(asks).await {
        let name = name_of(id);
        match r {
            Ok(PeerAnswer::File(f)) => {
                views.push((name.clone(), f.into_iter().collect()));
                ids.push((name, id));
            }
            _ => tracing::warn!("node {name} did not say whether it has {path}"),
        }
    }
    Ok(merge(&views).into_iter().next().map(|row| (row, ids)))
}

/// Every node: this one, connected peers (with RTT and clock offset),
/// trusted nodes reached through the others, and known, trusted or
/// configured nodes that are down.
pub async fn nodes(
    answerer: &NodeAnswerer,
    core: &CoreHandle,
    mesh: &Arc<crate::mesh::Mesh>,
    name_of: &(dyn Fn(NodeId) -> String + Sync),
    configured: &[crate::config::PeerSpec],
) -> Vec<NodeStatus> {
    let links = mesh.links();
    let mut out = Vec::new();
    if let Ok(me) = answerer.status().await {
        out.push(me);
    }
    let known = core.ask_lock(LockMsg::KnownPeers).await.unwrap_or_default();
    let mut seen: Vec<NodeId> = Vec::new();
    let asks = links
        .peers()
        .into_iter()
        .filter_map(|p| links.get(&p))
        .map(|l| async move {
            // Timed per try: a try on a link that was replaced is not
            // part of the round trip.
            let status = |l: Arc<crate::links::LinkHandle>| async move {
                let (t0, sent_ns) = (Instant::now(), now_ns());
                let r = l.query(PeerQuery::Status).await;
                r.map(|a| (a, t0.elapsed(), sent_ns))
            };
            let r = match links
                .ask(&l.peer, QUERY_TIMEOUT, QUERY_TIMEOUT, status)
                .await
            {
                Some((_, r)) => r.map_err(|e| e.to_string()),
                None => Err("not connected".to_string()),
            };
            (l.peer, l.name.clone(), r)
        });
    for (id, name, r) in futures::future::join_all(asks).await {
        seen.push(id);
        let addr = configured
            .iter()
            .find(|a| links.dialed(&a.addr) == Some(id))
            .map_or_else(|| "(connected to us)".to_string(), |a| a.addr.clone());
        match r {
            Ok((PeerAnswer::Status(mut st, their_now), rtt, sent_ns)) => {
                let mid = sent_ns + rtt.as_nanos() as i64 / 2;
                st.addr = addr;
                // The id its key proved, whatever it says about itself.
                st.id = Some(id);
                st.rtt_us = Some(rtt.as_micros() as u64);
                st.clock_offset_ms = Some((their_now - mid) / 1_000_000);
                out.push(st);
            }
            _ => out.push(down(Some(id), name, addr)),
        }
    }
    // Trusted nodes with no link here, asked through the others (their
    // round trip is the whole path's).
    let far: Vec<(NodeId, Duration)> = to_ask(mesh)
        .into_iter()
        .filter(|(id, _)| !seen.contains(id))
        .collect();
    let asks = far.into_iter().map(|(id, wait)| async move {
        let t0 = Instant::now();
        let sent_ns = now_ns();
        let r = mesh.query(id, PeerQuery::Status, wait).await;
        (id, r, t0.elapsed(), sent_ns)
    });
    for (id, r, rtt, sent_ns) in futures::future::join_all(asks).await {
        if let Ok(PeerAnswer::Status(mut st, their_now)) = r {
            seen.push(id);
            let mid = sent_ns + rtt.as_nanos() as i64 / 2;
            // Its own listen address, which a client may dial to talk to
            // it directly, and how it was reached from here.
            st.addr = format!("{} (through other nodes)", st.addr);
            st.id = Some(id);
            st.rtt_us = Some(rtt.as_micros() as u64);
            st.clock_offset_ms = Some((their_now - mid) / 1_000_000);
            out.push(st);
        }
    }
    for id in mesh.trust().members() {
        if id != mesh.me() && !seen.contains(&id) && !known.iter().any(|(k, _)| *k == id) {
            seen.push(id);
            out.push(down(Some(id), name_of(id), "(not reached)".into()));
        }
    }
    for (id, name) in known {
        if !seen.contains(&id) {
            let addr = configured
                .iter()
                .find(|a| links.dialed(&a.addr) == Some(id))
                .map_or_else(|| "(unknown)".to_string(), |a| a.addr.clone());
            out.push(down(Some(id), name, addr));
        }
    }
    for a in configured {
        if links.dialed(&a.addr).is_none() {
            out.push(down(
                a.id,
                format!("(never reached) {}", a.addr),
                a.addr.clone(),
            ));
        }
    }
    out
}

fn down(id: Option<NodeId>, name: String, addr: String) -> NodeStatus {
    NodeStatus {
        id,
        name,
        addr,
        up: false,
        rtt_us: None,
        files: 0,
        bytes: 0,
        cpu_percent: 0.0,
        rss: 0,
        uptime_s: 0,
        clock_offset_ms: None,
        warnings: Vec::new(),
        history: Vec::new(),
        pending_files: 0,
        pending_bytes: 0,
    }
}

/// Every held change in the cluster: this node's and each connected peer's.
pub async fn held_everywhere(
    core: &CoreHandle,
    mesh: &Arc<crate::mesh::Mesh>,
) -> Vec<tandem_common::proto::HeldChange> {
    let mut out = core.ask_lock(LockMsg::Held).await.unwrap_or_default();
    // Every trusted node, linked or not: the mesh forwards the question.
    let asks = to_ask(mesh)
        .into_iter()
        .map(|(id, wait)| mesh.query(id, PeerQuery::Held, wait));
    for r in futures::future::join_all(asks).await {
        if let Ok(PeerAnswer::Held(v)) = r {
            out.extend(v);
        }
    }
    out.sort_by(|a, b| (&a.path, &a.node).cmp(&(&b.path, &b.node)));
    out.dedup();
    out
}

/// Every conflict copy kept in the cluster (each node's newest), newest
/// first; the nodes that could not say (by name, with why); and how many
/// older copies are kept but not listed.
pub async fn conflicts_everywhere(
    core: &CoreHandle,
    mesh: &Arc<crate::mesh::Mesh>,
    name_of: &(dyn Fn(NodeId) -> String + Sync),
) -> (Vec<ConflictCopy>, Vec<String>, u64) {
    let mut unknown = Vec::new();
    let mut not_listed = 0u64;
    let mut out = match core.conflicts().await {
        Ok((v, total)) => {
            not_listed += total.saturating_sub(v.len() as u64);
            v
        }
        Err(e) => {
            unknown.push(format!("{}: {e}", mesh.name()));
            Vec::new()
        }
    };
    let asked = to_ask(mesh);
    let asks = asked
        .iter()
        .map(|(id, wait)| mesh.query(*id, PeerQuery::Conflicts, *wait));
    for ((id, _), r) in asked.iter().zip(futures::future::join_all(asks).await) {
        match r {
            Ok(PeerAnswer::Conflicts(v, total)) => {
                not_listed = not_listed.saturating_add(total.saturating_sub(v.len() as u64));
                out.extend(v);
            }
            Ok(_) => unknown.push(format!("{}: unexpected answer", name_of(*id))),
            Err(e) => unknown.push(format!("{}: {e}", name_of(*id))),
        }
    }
    out.sort_by(|a, b| {
        b.kept_ns
            .cmp(&a.kept_ns)
            .then_with(|| (&a.node, &a.id).cmp(&(&b.node, &b.id)))
    });
    (out, unknown, not_listed)
}

/// Every node's kept versions of `path` (or of the files under it), newest
/// kept first, and the nodes that could not say, with why.
pub async fn versions_everywhere(
    answerer: &NodeAnswerer,
    mesh: &Arc<crate::mesh::Mesh>,
    name_of: &(dyn Fn(NodeId) -> String + Sync),
    path: &tandem_common::RelPath,
) -> (Vec<KeptVersion>, Vec<String>) {
    let mut unknown = Vec::new();
    let mut out = match answerer.versions_of(path.clone()).await {
        Ok(v) => v,
        Err(e) => {
            unknown.push(format!("{}: {e}", mesh.name()));
            Vec::new()
        }
    };
    let asked = to_ask(mesh);
    let asks = asked.iter().map(|(id, wait)| {
        let q = PeerQuery::Versions { path: path.clone() };
        mesh.query(*id, q, *wait)
    });
    for ((id, _), r) in asked.iter().zip(futures::future::join_all(asks).await) {
        match r {
            Ok(PeerAnswer::Versions(v)) => out.extend(v),
            Ok(_) => unknown.push(format!("{}: unexpected answer", name_of(*id))),
            Err(e) => unknown.push(format!("{}: {e}", name_of(*id))),
        }
    }
    out.sort_by(|a, b| {
        b.kept_ns
            .cmp(&a.kept_ns)
            .then_with(|| (&a.node, &a.id).cmp(&(&b.node, &b.id)))
    });
    (out, unknown)
}

/// Finds the link to the node named `name`.
pub fn link_by_name(links: &Links, name: &str) -> Option<Arc<crate::links::LinkHandle>> {
    links
        .peers()
        .into_iter()
        .filter_map(|p| links.get(&p))
        .find(|l| l.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_common::{ContentHash, RelPath, VersionVector};

    fn f(path: &str, v: &[(NodeId, u64)], content: &str, mtime: i64) -> FileSummary {
        let mut version = VersionVector::new();
        for &(n, c) in v {
            version.set(n, c);
        }
        FileSummary {
            differs: false,
            link: None,
            path: RelPath::new(path).unwrap(),
            size: content.len() as u64,
            mtime_ns: mtime,
            hash: ContentHash::of(content.as_bytes()),
            version,
            locked_by: None,
            held: 0,
            syncing: false,
            present: true,
            error: None,
        }
    }

    #[test]
    fn merge_picks_newest_and_lists_holders_and_states() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let old = f("x", &[(a, 1)], "old", 100);
        let new = f("x", &[(a, 1), (b, 1)], "new", 50);
        let mut syncing = old.clone();
        syncing.syncing = true;
        let views = vec![
            (
                "A".to_string(),
                vec![syncing, f("only-a", &[(a, 2)], "a", 1)],
            ),
            ("B".to_string(), vec![new.clone()]),
            ("C".to_string(), vec![new.clone()]),
        ];
        let t = merge(&views);
        assert_eq!(t.len(), 2);
        let x = t.iter().find(|r| r.path.as_str() == "x").unwrap();
        assert_eq!(
            x.hash, new.hash,
            "dominating version wins even with an older mtime"
        );
        assert_eq!(x.nodes, vec!["B", "C"]);
        let state =
            |row: &ListedFile, n: &str| row.states.iter().find(|s| s.node == n).unwrap().state;
        assert_eq!(state(x, "A"), FileState::Syncing);
        assert_eq!(state(x, "B"), FileState::InSync);
        let only = t.iter().find(|r| r.path.as_str() == "only-a").unwrap();
        assert_eq!(only.nodes, vec!["A"]);
        assert_eq!(state(only, "B"), FileState::Missing);
        assert_eq!(t[0].path.as_str(), "only-a", "sorted by path");
    }

    fn view(name: &str) -> View {
        View {
            name: name.to_string(),
            peer: None,
            page: Default::default(),
            last: None,
            more: true,
        }
    }

    #[test]
    fn a_page_out_of_order_or_empty_with_more_is_refused() {
        let a = NodeId::random();
        let p = |path: &str| f(path, &[(a, 1)], path, 1);
        let mut v = view("A");
        assert!(matches!(
            v.take(vec![p("b"), p("a")], true),
            Err(PageError::Unsorted { .. })
        ));
        assert!(matches!(
            v.take(vec![p("a"), p("a")], true),
            Err(PageError::Unsorted { .. })
        ));
        assert!(matches!(
            v.take(vec![], true),
            Err(PageError::EmptyWithMore)
        ));
        v.take(vec![p("a"), p("c")], true).unwrap();
        assert_eq!(v.last.as_ref().map(|l| l.as_str()), Some("c"));
        assert!(
            matches!(v.take(vec![p("b")], false), Err(PageError::Unsorted { .. })),
            "a page must start after the last path read"
        );
        v.take(vec![], false).unwrap();
        assert!(!v.more);
        assert_eq!(v.last.as_ref().map(|l| l.as_str()), Some("c"));
    }

    proptest::proptest! {
        /// Merging views a page at a time, whatever the page sizes, gives
        /// the table that merging them whole gives.
        #[test]
        fn merging_page_by_page_is_merging_whole(
            files in proptest::collection::vec(
                proptest::collection::btree_map(0u8..40, (1u64..4, 0u8..3, proptest::bool::ANY), 0..30),
                1..4,
            ),
            sizes in proptest::collection::vec(1usize..7, 1..4),
        ) {
            let ids: Vec<NodeId> = (0..files.len()).map(|_| NodeId::random()).collect();
            let views: Vec<(String, Vec<FileSummary>)> = files
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let list = m
                        .iter()
                        .map(|(&p, &(counter, content, present))| {
                            let mut s = f(&format!("p{p:02}"), &[(ids[i], counter)], &content.to_string(), i64::from(content));
                            s.present = present;
                            s
                        })
                        .collect();
                    (format!("N{i}"), list)
                })
                .collect();
            let whole = merge(&views);
            let mut streams: Vec<(View, std::vec::IntoIter<FileSummary>)> = views
                .iter()
                .map(|(n, l)| (view(n), l.clone().into_iter()))
                .collect();
            let mut got = Vec::new();
            for _round in 0..1000 {
                for (i, (v, rest)) in streams.iter_mut().enumerate() {
                    if v.more && v.page.is_empty() {
                        let page: Vec<FileSummary> = rest.by_ref().take(sizes[i % sizes.len()]).collect();
                        let more = rest.len() > 0;
                        v.take(page, more).unwrap();
                    }
                }
                if streams.iter().all(|(v, _)| v.page.is_empty()) {
                    break;
                }
                let mut vs: Vec<View> = streams.iter_mut().map(|(v, _)| std::mem::replace(v, view(""))).collect();
                let rows = merge_ready(&mut vs);
                for ((v, _), back) in streams.iter_mut().zip(vs) {
                    *v = back;
                }
                got.extend(rows);
            }
            let key = |t: &[ListedFile]| -> Vec<String> { t.iter().map(|r| format!("{r:?}")).collect() };
            proptest::prop_assert_eq!(key(&got), key(&whole));
        }
    }
}
