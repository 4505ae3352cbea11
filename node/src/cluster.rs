//! The cluster as clients see it: the merged file table, the node list with
//! round-trip times and clock offsets, and answers to peers' questions. The
//! merge itself is pure ([`merge`]); gathering asks each connected peer.
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
    NodeFileState, NodeStatus, OpenedCopy, PeerAnswer, PeerQuery,
};
use tandem_common::{NodeId, VvOrder};

use crate::core::{CoreHandle, LockMsg, now_ns};
use crate::links::{Answerer, Links};
use crate::metrics::Metrics;

/// Files per answer page (keeps each frame a few MiB).
const FILES_PAGE: usize = 20_000;

/// All files of node `id` (linked here or not), page by page.
pub async fn node_files(
    mesh: &Arc<crate::mesh::Mesh>,
    id: NodeId,
) -> Result<Vec<FileSummary>, String> {
    files_by(|q| mesh.query(id, q, QUERY_TIMEOUT)).await
}

/// All files of a node, page by page, asking with `ask`.
async fn files_by<F>(ask: impl Fn(PeerQuery) -> F) -> Result<Vec<FileSummary>, String>
where
    F: std::future::Future<Output = Result<PeerAnswer, String>>,
{
    let mut out: Vec<FileSummary> = Vec::new();
    loop {
        let after = out.last().map(|f| f.path.clone());
        match ask(PeerQuery::Files { after }).await? {
            PeerAnswer::Files(page, more) => {
                out.extend(page);
                if !more {
                    return Ok(out);
                }
            }
            _ => return Err("unexpected answer".into()),
        }
    }
}

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
    pub async fn status(&self) -> Result<NodeStatus, String> {
        let c = self.core.counts().await.map_err(|e| e.to_string())?;
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
    ) -> Result<Vec<KeptVersion>, String> {
        let (dir, name) = (self.versions.clone(), self.name.clone());
        tokio::task::spawn_blocking(move || crate::versions::of(&dir, &name, &path))
            .await
            .map_err(|e| format!("listing versions failed: {e}"))?
            .map_err(|e| format!("cannot read the versions folder: {e}"))
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
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<PeerAnswer, String>> + Send + '_>>
    {
        Box::pin(async move {
            match q {
                PeerQuery::Files { after } => {
                    let all = self.core.summary().await.map_err(|e| e.to_string())?;
                    let start = match &after {
                        None => 0,
                        Some(a) => all.partition_point(|f| &f.path <= a),
                    };
                    let end = (start + FILES_PAGE).min(all.len());
                    Ok(PeerAnswer::Files(all[start..end].to_vec(), end < all.len()))
                }
                PeerQuery::Status => Ok(PeerAnswer::Status(self.status().await?, now_ns())),
                PeerQuery::Ping => Ok(PeerAnswer::Pong),
                PeerQuery::Cache => Ok(PeerAnswer::Cache(self.cache.report(&self.name))),
                PeerQuery::File { path } => self
                    .core
                    .summary_of(path)
                    .await
                    .map(PeerAnswer::File)
                    .map_err(|e| e.to_string()),
                PeerQuery::Held => self
                    .core
                    .ask_lock(LockMsg::Held)
                    .await
                    .map(PeerAnswer::Held)
                    .map_err(|e| e.to_string()),
                PeerQuery::Conflicts => self
                    .core
                    .conflicts()
                    .await
                    .map(|(v, total)| PeerAnswer::Conflicts(v, total))
                    .map_err(|e| e.to_string()),
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
                        return Err(format!("at most {MESH_BLOCKS} blocks per request"));
                    }
                    let got =
                        crate::peer::serve_blocks(&self.core, path, hash, blocks, Vec::new()).await;
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
    let mut out = Vec::with_capacity(by_path.len());
    for (path, cands) in by_path {
        // A version that differs by its node's mode (declined, or not
        // sent) is not the cluster's: it is the newest only where it is
        // the only one.
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
            });
        let Some(newest) = newest else { continue };
        let holds =
            |f: &FileSummary| f.present && f.hash == newest.hash && f.mtime_ns == newest.mtime_ns;
        let mut nodes: Vec<String> = cands
            .iter()
            .filter(|(_, f)| holds(f))
            .map(|(n, _)| n.to_string())
            .collect();
        nodes.sort();
        let states = views
            .iter()
            .map(|(node, _)| {
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
                    node: node.clone(),
                    state,
                }
            })
            .collect();
        out.push(ListedFile {
            link: newest.link.clone(),
            path: path.clone(),
            size: newest.size,
            mtime_ns: newest.mtime_ns,
            hash: newest.hash,
            nodes,
            locked_by: cands.iter().find_map(|(_, f)| f.locked_by.clone()),
            held: cands.iter().map(|(_, f)| f.held).sum(),
            states,
        });
    }
    // Files only wanted somewhere (nobody has them yet) are not listed.
    out.retain(|f| !f.nodes.is_empty() || f.states.iter().any(|s| s.state != FileState::Missing));
    out
}

/// The merged table, asking every trusted node (through the others when
/// it is not linked here); `name_of` names them.
pub async fn merged_list(
    core: &CoreHandle,
    mesh: &Arc<crate::mesh::Mesh>,
    name_of: &(dyn Fn(NodeId) -> String + Sync),
    me: &str,
) -> Result<Vec<ListedFile>, tandem_common::proto::ApiError> {
    let own = core.summary().await?;
    let mut views = vec![(me.to_string(), own)];
    let asks = to_ask(mesh).into_iter().map(|(id, wait)| async move {
        let files = files_by(|q| mesh.query(id, q, wait)).await;
        (name_of(id), files)
    });
    for (name, r) in futures::future::join_all(asks).await {
        match r {
            Ok(v) => views.push((name, v)),
            Err(e) => tracing::warn!("node {name} could not list its files: {e}"),
        }
    }
    Ok(merge(&views))
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
            let t0 = Instant::now();
            let sent_ns = now_ns();
            let r = tokio::time::timeout(QUERY_TIMEOUT, l.query(PeerQuery::Status)).await;
            let rtt = t0.elapsed();
            (l.peer, l.name.clone(), r, rtt, sent_ns)
        });
    for (id, name, r, rtt, sent_ns) in futures::future::join_all(asks).await {
        seen.push(id);
        let addr = configured
            .iter()
            .find(|a| links.dialed(&a.addr) == Some(id))
            .map_or_else(|| "(connected to us)".to_string(), |a| a.addr.clone());
        match r {
            Ok(Ok(PeerAnswer::Status(mut st, their_now))) => {
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
}
