//! Building a file from blocks: reuse local blocks where any local file has
//! them, fetch the rest from peers, write everything into a temp file in the
//! state folder, verify each block and the whole-content BLAKE3 hash, set
//! permissions and mtime, and fsync. The core then renames the temp file
//! over the target, so a half-received file is never visible under its name.
//!
//! Memory is bounded: at most [`WINDOW`] segments of at most
//! [`SEGMENT_BLOCKS`] blocks are in flight per transfer, and every remote
//! segment also takes bytes from a node-wide budget.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tandem_common::blocklist;
use tandem_common::model::BLOCK_SIZE;
use tandem_common::proto::{BlockListPart, FileData};
use tandem_common::{ContentHash, FileEntry, NodeId, RelPath};
use tokio::sync::Semaphore;

use crate::index::LocalStat;
use crate::links::{LinkHandle, Links};
#[cfg(doc)]
use crate::links::{MAX_FILES_PER_REQUEST, SMALL_FILE_MAX};

/// Blocks per remote request (1 MiB with 128 KiB blocks).
pub const SEGMENT_BLOCKS: usize = 8;
/// Segments in flight per transfer.
pub const WINDOW: usize = 4;
/// How long one block request may take before the transfer is retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where one block comes from.
#[derive(Debug, Clone)]
pub enum BlockSource {
    /// Read it from a local file (verified; falls back to the network).
    Local {
        /// Absolute path of the local file.
        path: PathBuf,
        /// Block index in that file.
        index: u32,
    },
    /// Ask a peer.
    Remote,
}

/// A transfer to run.
pub struct Job {
    /// The version to build.
    pub entry: FileEntry,
    /// One source per block of `entry`.
    pub plan: Vec<BlockSource>,
    /// Temp file to write.
    pub tmp: PathBuf,
    /// Peers to ask, preferred first.
    pub peers: Vec<NodeId>,
    /// Live links.
    pub links: Links,
    /// Node-wide budget of bytes in flight, in KiB permits.
    pub budget: Arc<Semaphore>,
}

/// A finished transfer.
#[derive(Debug)]
pub struct Done {
    /// The temp file holding the verified content.
    pub tmp: PathBuf,
    /// Its stat, taken by the writer after its last change (mode, mtime):
    /// what is recorded once it is in place (a rename keeps all of it), so
    /// the core does not look at it again.
    pub stat: LocalStat,
    /// Bytes received over the network.
    pub bytes_received: u64,
    /// Bytes reused from local files.
    pub bytes_reused: u64,
    /// The peer that sent the blocks (if any were fetched).
    pub from: Option<NodeId>,
    /// Wall time.
    pub took: Duration,
}

/// Why a transfer failed, as far as trying again is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The link to the peer closed under the request (often: replaced by
    /// the pair's kept link when both nodes dialed at once).
    LinkClosed,
    /// What was built does not match the version's content hash.
    ContentMismatch,
    /// Anything else.
    Other,
}

/// A failed transfer: the cause, and what to log.
#[derive(Debug, Clone)]
pub struct Failure {
    /// For deciding how to retry.
    pub cause: Cause,
    /// What failed, on what.
    pub msg: String,
}

impl Failure {
    fn new(cause: Cause, msg: String) -> Self {
        Failure { cause, msg }
    }
}

impl From<String> for Failure {
    fn from(msg: String) -> Self {
        Failure::new(Cause::Other, msg)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

fn block_len(size: u64, i: usize) -> usize {
    (size - i as u64 * BLOCK_SIZE).min(BLOCK_SIZE) as usize
}

enum Segment {
    Local(Vec<(usize, PathBuf, u32)>),
    Remote(Vec<usize>),
}

fn segments(plan: &[BlockSource]) -> VecDeque<Segment> {
    let mut out = VecDeque::new();
    for (i, src) in plan.iter().enumerate() {
        match (src, out.back_mut()) {
            (BlockSource::Local { path, index }, Some(Segment::Local(v)))
                if v.len() < SEGMENT_BLOCKS =>
            {
                v.push((i, path.clone(), *index))
            }
            (BlockSource::Local { path, index }, _) => {
                out.push_back(Segment::Local(vec![(i, path.clone(), *index)]))
            }
            (BlockSource::Remote, Some(Segment::Remote(v))) if v.len() < SEGMENT_BLOCKS => {
                v.push(i)
            }
            (BlockSource::Remote, _) => out.push_back(Segment::Remote(vec![i])),
        }
    }
    out
}

/// Runs a transfer to completion or failure. On failure the temp file is
/// removed.
pub async fn run(job: Job) -> Result<Done, Failure> {
    let tmp = job.tmp.clone();
    let res = run_inner(job).await;
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

type SegmentResult = Result<(Vec<(usize, Bytes)>, u64, Option<NodeId>), Failure>;

async fn run_inner(job: Job) -> Result<Done, Failure> {
    let started = Instant::now();
    let entry = Arc::new(job.entry);
    let tmp = job.tmp.clone();
    let size = entry.size;
    let file = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
        if let Some(parent) = tmp.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let f = File::create(&tmp)?;
        f.set_len(size)?;
        Ok(f)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot create temp file {}: {e}", job.tmp.display()))?;
    let file = Arc::new(file);

    let mut segs = segments(&job.plan);
    let mut inflight = futures::stream::FuturesOrdered::new();
    let mut whole = blake3::Hasher::new();
    let (mut received, mut reused, mut from) = (0u64, 0u64, None);
    loop {
        while inflight.len() < WINDOW {
            let Some(seg) = segs.pop_front() else { break };
            let (entry, links, peers, budget) = (
                entry.clone(),
                job.links.clone(),
                job.peers.clone(),
                job.budget.clone(),
            );
            inflight.push_back(
                async move { fetch_segment(seg, &entry, &links, &peers, &budget).await },
            );
        }
        let Some(res): Option<SegmentResult> = futures::StreamExt::next(&mut inflight).await else {
            break;
        };
        let (blocks, got, peer) = res?;
        received += got;
        if peer.is_some() {
            from = peer;
        }
        for (_, data) in &blocks {
            whole.update(data);
        }
        reused += blocks.iter().map(|(_, d)| d.len() as u64).sum::<u64>() - got;
        let f = file.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            for (i, data) in blocks {
                f.write_all_at(&data, i as u64 * BLOCK_SIZE)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot write temp file: {e}"))?;
    }
    let got = ContentHash(*whole.finalize().as_bytes());
    if got != entry.hash {
        let f = file.clone();
        let e = entry.clone();
        let bad = tokio::task::spawn_blocking(move || first_bad_block(&f, &e))
            .await
            .ok()
            .flatten();
        let which = bad.map_or(String::new(), |i| format!(", first wrong block {i}"));
        return Err(Failure::new(
            Cause::ContentMismatch,
            format!(
                "content hash mismatch for {} (expected {:?}, got {got:?}{which}); the file changed at the source",
                entry.path, entry.hash
            ),
        ));
    }
    let (mode, mtime) = (entry.mode, entry.mtime_ns);
    let f = file.clone();
    let stat = tokio::task::spawn_blocking(move || -> std::io::Result<LocalStat> {
        set_mode_and_mtime(&f, mode, mtime)?;
        f.sync_all()?;
        Ok(crate::scan::local_stat(&f.metadata()?))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot finish temp file: {e}"))?;
    Ok(Done {
        tmp: job.tmp,
        stat,
        bytes_received: received,
        bytes_reused: reused,
        from,
        took: started.elapsed(),
    })
}

/// The first block of the written temp file that does not match its hash
/// (to say what went wrong after a whole-content mismatch).
fn first_bad_block(f: &File, entry: &FileEntry) -> Option<usize> {
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    (0..entry.blocks.len()).find(|&i| {
        let b = &mut buf[..block_len(entry.size, i)];
        f.read_exact_at(b, i as u64 * BLOCK_SIZE).is_err() || ContentHash::of(b) != entry.blocks[i]
    })
}

/// Gives a finished temp file the version's permission bits and mtime.
fn set_mode_and_mtime(f: &File, mode: u32, mtime_ns: i64) -> std::io::Result<()> {
    f.set_permissions(std::fs::Permissions::from_mode(
        mode & tandem_common::model::SYNCED_MODE_BITS,
    ))?;
    filetime::set_file_handle_times(f, None, Some(crate::clock::file_time(mtime_ns)))
}

/// Small files fetched with one request (see [`run_batch`]).
pub struct Batch {
    /// (version to build, temp file to write), each at most
    /// [`SMALL_FILE_MAX`] bytes, at most [`MAX_FILES_PER_REQUEST`] of them.
    pub files: Vec<(FileEntry, PathBuf)>,
    /// Peers to ask, preferred first.
    pub peers: Vec<NodeId>,
    /// Live links.
    pub links: Links,
}

/// A small file's content that came inside a peer's index message, held
/// until it is written. Every `Given` alive counts its bytes in a shared
/// total (given back when dropped), which the core keeps under a cap.
pub struct Given {
    data: FileData,
    /// Counted in `held` (the data may have been taken out meanwhile).
    len: usize,
    held: Arc<std::sync::atomic::AtomicUsize>,
}

impl Given {
    /// Holds `data`, counted in `held`.
    pub fn new(data: FileData, held: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        let len = data.0.len();
        held.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        Given {
            data,
            len,
            held: held.clone(),
        }
    }
}

impl Drop for Given {
    fn drop(&mut self) {
        self.held
            .fetch_sub(self.len, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Writes small files whose content `from` sent with their entries, like
/// a fetched batch (verified, made durable; see [`write_batch`]), without
/// asking anyone.
pub async fn write_given(
    files: Vec<(FileEntry, PathBuf, Given)>,
    from: NodeId,
) -> Vec<Result<Done, Failure>> {
    let started = Instant::now();
    let mut held = Vec::with_capacity(files.len());
    let (files, data): (Vec<_>, Vec<_>) = files
        .into_iter()
        .map(|(e, tmp, mut g)| {
            let data = FileData(std::mem::take(&mut g.data.0));
            // Still counted until written.
            held.push(g);
            ((e, tmp), Ok(data))
        })
        .unzip();
    let done = written_batch(files, data, from, started).await;
    drop(held);
    done
}

/// Fetches a batch of small files with one request, writes each into its
/// temp file (verified, with permissions and mtime), and makes them all
/// durable (see [`write_batch`]). One result per file, in order; a failed
/// file's temp file is removed.
pub async fn run_batch(batch: Batch) -> Vec<Result<Done, Failure>> {
    let started = Instant::now();
    let asked: Vec<(RelPath, ContentHash)> = batch
        .files
        .iter()
        .map(|(e, _)| (e.path.clone(), e.hash))
        .collect();
    let mut last = Failure::from("no peer that has these files is connected".to_string());
    let mut answer = None;
    for peer in &batch.peers {
        let ask = |link: Arc<LinkHandle>| {
            let asked = asked.clone();
            async move { link.get_files(asked).await }
        };
        let Some((link, res)) = ask_peer(&batch.links, peer, ask).await else {
            continue;
        };
        match res {
            Ok(data) if data.len() == asked.len() => {
                tracing::debug!(
                    "{} files asked from {} in one request",
                    asked.len(),
                    link.name
                );
                // A file's error is the peer's ("has changed here"): say whose.
                let data: Vec<_> = data
                    .into_iter()
                    .map(|r| r.map_err(|e| format!("{}: {e}", link.name)))
                    .collect();
                answer = Some((*peer, data));
                break;
            }
            Ok(data) => {
                last = Failure::from(format!(
                    "{} sent {} files, {} asked",
                    link.name,
                    data.len(),
                    asked.len()
                ))
            }
            Err(e) => last = link_failure(&link, e),
        }
    }
    let Some((peer, data)) = answer else {
        return batch.files.iter().map(|_| Err(last.clone())).collect();
    };
    written_batch(batch.files, data, peer, started).await
}

/// Writes `files` from `data` (see [`write_batch`]) off the async threads,
/// and reports each as received from `peer`.
async fn written_batch(
    files: Vec<(FileEntry, PathBuf)>,
    data: Vec<Result<FileData, String>>,
    peer: NodeId,
    started: Instant,
) -> Vec<Result<Done, Failure>> {
    let n = files.len();
    let written = tokio::task::spawn_blocking(move || write_batch(files, data)).await;
    let written = written.unwrap_or_else(|e| {
        let e = Failure::from(format!("writing a batch of {n} small files failed: {e}"));
        vec![Err(e); n]
    });
    let took = started.elapsed();
    written
        .into_iter()
        .map(|r| {
            r.map(|(tmp, size, stat)| Done {
                tmp,
                stat,
                bytes_received: size,
                bytes_reused: 0,
                from: Some(peer),
                took,
            })
        })
        .collect()
}

/// Writes and verifies each answered file into its temp file, then makes
/// them durable: an fsync each when they are few, else one `syncfs` (see
/// [`FSYNC_EACH_MAX`]). Returns (temp file, size, its stat) per file.
fn write_batch(
    files: Vec<(FileEntry, PathBuf)>,
    data: Vec<Result<FileData, String>>,
) -> Vec<Result<(PathBuf, u64, LocalStat), Failure>> {
    let mut out = Vec::with_capacity(files.len());
    // The files written, while few enough to fsync one by one.
    let mut written: Vec<File> = Vec::new();
    let mut count = 0;
    for ((entry, tmp), d) in files.into_iter().zip(data) {
        let r = d.map_err(Failure::from).and_then(|FileData(bytes)| {
            if bytes.len() as u64 != entry.size || ContentHash::of(&bytes) != entry.hash {
                return Err(Failure::new(
                    Cause::ContentMismatch,
                    format!(
                        "content hash mismatch for {}; the file changed at the source",
                        entry.path
                    ),
                ));
            }
            let (f, stat) = write_temp(&tmp, &bytes, entry.mode, entry.mtime_ns)
                .map_err(|e| format!("cannot write temp file {}: {e}", tmp.display()))?;
            count += 1;
            if count > FSYNC_EACH_MAX {
                // One is enough for the `syncfs`.
                written.truncate(1);
            }
            written.push(f);
            Ok((tmp.clone(), entry.size, stat))
        });
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        out.push(r);
    }
    let synced = if count <= FSYNC_EACH_MAX {
        written.iter().try_for_each(File::sync_all)
    } else {
        written.first().map_or(Ok(()), syncfs)
    };
    if let Err(e) = synced {
        for r in &mut out {
            if let Ok((tmp, _, _)) = r {
                let _ = std::fs::remove_file(&*tmp);
                *r = Err(Failure::from(format!("cannot sync the temp files: {e}")));
            }
        }
    }
    out
}

/// Batches of at most this many files are made durable by an fsync of
/// each; larger ones by one `syncfs` (per-file fsyncs are what made many
/// small files slow). A `syncfs` also writes back everything else dirty on
/// the file system (another program's large copy included), so a lone new
/// file does not wait for that.
const FSYNC_EACH_MAX: usize = 4;

/// Creates `tmp` with `bytes`, permission bits and mtime (not synced);
/// returns it open, and its stat.
fn write_temp(
    tmp: &Path,
    bytes: &[u8],
    mode: u32,
    mtime_ns: i64,
) -> std::io::Result<(File, LocalStat)> {
    let mut f = match File::create(tmp) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = tmp.parent() {
                std::fs::create_dir_all(parent)?;
            }
            File::create(tmp)?
        }
        r => r?,
    };
    f.write_all(bytes)?;
    set_mode_and_mtime(&f, mode, mtime_ns)?;
    let stat = crate::scan::local_stat(&f.metadata()?);
    Ok((f, stat))
}

/// Flushes everything written to the filesystem holding `f` to disk.
fn syncfs(f: &File) -> std::io::Result<()> {
    // SAFETY: syncfs only reads the descriptor, which `f` keeps open.
    if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The bytes of an answer to a block request for `asked` blocks of a file
/// of `size` bytes, if it has exactly those blocks, in order, each of the
/// right length. Block contents are not hashed here: the sender checked each
/// against its hash, and the whole-content hash of the finished file catches
/// anything else (one hashing pass instead of two).
pub fn check_blocks(
    size: u64,
    asked: &[usize],
    got: Vec<tandem_common::proto::BlockData>,
) -> Result<Vec<Bytes>, String> {
    if got.len() != asked.len() {
        return Err(format!("sent {} blocks, {} asked", got.len(), asked.len()));
    }
    got.into_iter()
        .zip(asked)
        .map(|(b, &i)| {
            if b.index as usize != i || b.bytes.len() != block_len(size, i) {
                return Err(format!("block {i} has the wrong index or size"));
            }
            Ok(b.bytes)
        })
        .collect()
}

/// A request to a peer failed: say which peer, and whether its link closed.
fn link_failure(link: &LinkHandle, e: String) -> Failure {
    let cause = if link.is_closed() {
        Cause::LinkClosed
    } else {
        Cause::Other
    };
    Failure::new(cause, format!("{}: {e}", link.name))
}

/// Asks `peer` over its link, with a deadline. When both nodes dialed at
/// once, the link a request went out on may be replaced by the one both
/// keep; the request is then asked again on that one instead of failing.
/// `None` when the peer is not connected.
async fn ask_peer<T, F, Fut>(
    links: &Links,
    peer: &NodeId,
    ask: F,
) -> Option<(Arc<LinkHandle>, Result<T, String>)>
where
    F: Fn(Arc<LinkHandle>) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut link = links.get(peer)?;
    let mut tries = 0;
    loop {
        tries += 1;
        let res = tokio::time::timeout(REQUEST_TIMEOUT, ask(link.clone()))
            .await
            .unwrap_or_else(|_| Err(format!("request to {} timed out", link.name)));
        if res.is_ok() || tries == 3 || !link.is_closed() {
            return Some((link, res));
        }
        match replacement(links, peer, &link).await {
            Some(newer) => link = newer,
            None => return Some((link, res)),
        }
    }
}

/// A newer link to `peer` than `old`, waiting briefly for the other dial
/// of a simultaneous pair to finish its handshake.
async fn replacement(
    links: &Links,
    peer: &NodeId,
    old: &Arc<LinkHandle>,
) -> Option<Arc<LinkHandle>> {
    for _ in 0..50 {
        if let Some(l) = links
            .get(peer)
            .filter(|l| !Arc::ptr_eq(l, old) && !l.is_closed())
        {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Gets the complete block list of `entry` (announced without one) from
/// the first of `peers` that can give it. With `ours` (our block list of
/// another version of the path) the peer's group hashes are asked first,
/// and only the groups that differ are fetched; the others are taken from
/// `ours`. Without it, every group is fetched (a new file: the group round
/// would only add a round trip). Each part is checked (group hashes,
/// lengths); the whole-content hash of the built file is the final check.
pub async fn fetch_block_list(
    links: &Links,
    peers: &[NodeId],
    entry: &FileEntry,
    ours: &[ContentHash],
) -> Result<Vec<ContentHash>, String> {
    if !blocklist::list_fits(entry.size) {
        return Err(format!("{} is too large to sync", entry.path));
    }
    let mut last = "no peer that has this version is connected".to_string();
    for peer in peers {
        match list_from(links, peer, entry, ours).await {
            Some(Ok(list)) => return Ok(list),
            Some(Err(e)) => last = e,
            None => {}
        }
    }
    Err(last)
}

/// One peer's try of [`fetch_block_list`]; `None` when it is not connected.
async fn list_from(
    links: &Links,
    peer: &NodeId,
    entry: &FileEntry,
    ours: &[ContentHash],
) -> Option<Result<Vec<ContentHash>, String>> {
    let ask = |groups: Option<Vec<u32>>| {
        move |link: Arc<LinkHandle>| {
            let (path, groups) = (entry.path.clone(), groups.clone());
            async move { link.get_block_list(path, entry.hash, groups).await }
        }
    };
    let blocks = blocklist::block_count(entry.size);
    let theirs = if ours.is_empty() {
        None
    } else {
        let (link, res) = ask_peer(links, peer, ask(None)).await?;
        match res {
            Ok(BlockListPart::Groups(g)) if g.len() == blocklist::group_count(blocks) => Some(g),
            Ok(BlockListPart::Groups(g)) => {
                return Some(Err(format!(
                    "{} sent {} group hashes for {} groups",
                    link.name,
                    g.len(),
                    blocklist::group_count(blocks)
                )));
            }
            Ok(_) => return Some(Err(format!("{} answered groups with blocks", link.name))),
            Err(e) => return Some(Err(format!("{}: {e}", link.name))),
        }
    };
    let want: Vec<u32> = match &theirs {
        Some(g) => blocklist::differing_groups(g, ours),
        None => (0..blocklist::group_count(blocks) as u32).collect(),
    };
    let mut received = Vec::with_capacity(want.len());
    for chunk in want.chunks(blocklist::MAX_GROUPS_PER_REQUEST) {
        let (link, res) = ask_peer(links, peer, ask(Some(chunk.to_vec()))).await?;
        match res {
            Ok(BlockListPart::Blocks(lists)) if lists.len() == chunk.len() => {
                received.extend(chunk.iter().copied().zip(lists));
            }
            Ok(_) => {
                return Some(Err(format!(
                    "{} did not answer the {} groups asked",
                    link.name,
                    chunk.len()
                )));
            }
            Err(e) => return Some(Err(format!("{}: {e}", link.name))),
        }
    }
    let merged = blocklist::merge(blocks, theirs.as_deref(), ours, received)
        .map_err(|e| format!("bad block list of {} from {peer:?}: {e}", entry.path));
    Some(merged)
}

/// Reads or fetches one segment; returns (blocks, bytes from the network, peer).
async fn fetch_segment(
    seg: Segment,
    entry: &FileEntry,
    links: &Links,
    peers: &[NodeId],
    budget: &Semaphore,
) -> SegmentResult {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    match seg {
        Segment::Remote(v) => missing = v,
        Segment::Local(v) => {
            let wanted: Vec<(usize, PathBuf, u32, usize, ContentHash)> = v
                .into_iter()
                .map(|(i, p, at)| (i, p, at, block_len(entry.size, i), entry.blocks[i]))
                .collect();
            let read = tokio::task::spawn_blocking(move || {
                wanted
                    .into_iter()
                    .map(|(i, p, at, len, h)| {
                        let mut buf = vec![0u8; len];
                        let ok = crate::scan::open_nofollow(&p)
                            .and_then(|f| f.read_exact_at(&mut buf, at as u64 * BLOCK_SIZE))
                            .is_ok()
                            && ContentHash::of(&buf) == h;
                        (i, ok.then(|| Bytes::from(buf)))
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| e.to_string())?;
            for (i, data) in read {
                match data {
                    Some(d) => out.push((i, d)),
                    None => missing.push(i),
                }
            }
        }
    }
    let mut received = 0;
    let mut from = None;
    if !missing.is_empty() {
        let bytes: usize = missing.iter().map(|&i| block_len(entry.size, i)).sum();
        let _permit = budget
            .acquire_many((bytes / 1024 + 1) as u32)
            .await
            .map_err(|_| "shutting down".to_string())?;
        let (peer, data) = fetch_remote(entry, &missing, links, peers).await?;
        from = Some(peer);
        for (i, d) in missing.iter().zip(data) {
            received += d.len() as u64;
            out.push((*i, d));
        }
    }
    out.sort_by_key(|(i, _)| *i);
    Ok((out, received, from))
}

async fn fetch_remote(
    entry: &FileEntry,
    missing: &[usize],
    links: &Links,
    peers: &[NodeId],
) -> Result<(NodeId, Vec<Bytes>), Failure> {
    let mut last = Failure::from("no peer that has this version is connected".to_string());
    for peer in peers {
        let idx: Vec<u32> = missing.iter().map(|&i| i as u32).collect();
        let ask = |link: Arc<LinkHandle>| {
            let (path, idx) = (entry.path.clone(), idx.clone());
            async move { link.get_blocks(path, entry.hash, idx).await }
        };
        let Some((link, res)) = ask_peer(links, peer, ask).await else {
            continue;
        };
        match res {
            Ok(blocks) => match check_blocks(entry.size, missing, blocks) {
                Ok(data) => return Ok((*peer, data)),
                Err(e) => last = Failure::from(format!("{}: {e}", link.name)),
            },
            Err(e) => last = link_failure(&link, e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_common::proto::BlockData;

    #[test]
    fn block_answers_must_match_what_was_asked() {
        // A file of two full blocks and 10 bytes.
        let size = 2 * BLOCK_SIZE + 10;
        let full = || Bytes::from(vec![1u8; BLOCK_SIZE as usize]);
        let good = vec![
            BlockData::new(1, full()),
            BlockData::new(2, Bytes::from(vec![2u8; 10])),
        ];
        let data = check_blocks(size, &[1, 2], good).expect("a good answer");
        assert_eq!(
            data.iter().map(Bytes::len).sum::<usize>(),
            BLOCK_SIZE as usize + 10
        );

        let e = check_blocks(size, &[1, 2], vec![BlockData::new(1, full())]).unwrap_err();
        assert!(e.contains("sent 1 blocks, 2 asked"), "{e}");
        let e = check_blocks(size, &[1, 2], vec![]).unwrap_err();
        assert!(e.contains("sent 0 blocks"), "{e}");
        let swapped = vec![BlockData::new(2, full()), BlockData::new(1, full())];
        let e = check_blocks(size, &[1, 2], swapped).unwrap_err();
        assert!(e.contains("block 1 has the wrong index or size"), "{e}");
        let short = vec![BlockData::new(0, Bytes::from(vec![0u8; 5]))];
        let e = check_blocks(size, &[0], short).unwrap_err();
        assert!(e.contains("block 0"), "{e}");
    }
}
