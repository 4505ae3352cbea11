//! Building a file from blocks: reuse local blocks where a local file has
//! them at the same place (a block's hash is of its bytes and its offset),
//! fetch the rest from peers, write everything into a temp file in the
//! state folder, verify each block against the version's block list (which
//! must first make the content hash, so the file is then exactly the
//! version's content; see `tandem_common::hashing`), set permissions and
//! mtime, and fsync. The core then renames the temp file
//! over the target, so a half-received file is never visible under its name.
//!
//! A block that changed in a file we hold an older version of is asked as
//! a patch of our copy of it: only its changed 4 KiB chunks cross the
//! network (see [`tandem_common::delta`]).
//!
//! Memory is bounded: at most [`WINDOW`] segments of at most
//! [`SEGMENT_BLOCKS`] blocks, and at most [`WINDOW_BYTES`], are in flight
//! per transfer, and every remote segment also takes bytes from a
//! node-wide budget (twice its blocks while
//! our older copy of them is held beside what arrives) until its blocks are
//! written; blocks that were to come from a local copy and had to be asked
//! for take it only when it is free (see [`fetch_segment`]).

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
use tandem_common::buffers::{SEGMENT_MAX, SEGMENTS};
use tandem_common::delta;
use tandem_common::hashing::{block_hash, root_of};
use tandem_common::model::BLOCK_SIZE;
use tandem_common::proto::{BlockBase, BlockData, BlockListPart, FileData, PeerError};
use tandem_common::{ContentHash, FileEntry, NodeId, RelPath};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::index::LocalStat;
use crate::links::{LinkHandle, Links};
#[cfg(doc)]
use crate::links::{MAX_FILES_PER_REQUEST, SMALL_FILE_MAX};

/// Blocks per remote request (2 MiB with 128 KiB blocks). Half as many
/// requests, answers, wake-ups and writes as with 1 MiB: the 1 GiB row
/// 2-7 % faster, the sender's CPU about 8 % lower (`bench/SYNC.md`,
/// session 30).
pub const SEGMENT_BLOCKS: usize = 16;
/// Blocks per remote request asked as a patch of our older copy: such a
/// segment takes twice its bytes from the node-wide budget until answered
/// (our copy beside what arrives), and at 16 blocks one would take half of
/// it (4 of 8 MiB), so fewer patched requests would overlap.
pub const PATCHED_SEGMENT_BLOCKS: usize = 8;
// A whole segment's buffer is one the node's pool keeps.
const _: () = assert!(SEGMENT_BLOCKS * BLOCK_SIZE as usize <= SEGMENT_MAX);
const _: () = assert!(PATCHED_SEGMENT_BLOCKS <= SEGMENT_BLOCKS);
/// Segments in flight per transfer, at most: a plan that alternates
/// between local and remote blocks makes many small segments, and these
/// keep as many requests going as before.
pub const WINDOW: usize = 4;
/// Bytes of the segments in flight per transfer, at most (one segment is
/// always let through): 4 MiB, two whole segments, as four of 1 MiB were
/// (a transfer copying from local files holds them whole).
pub const WINDOW_BYTES: u64 = 4 << 20;
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
    /// Node-wide budget of remote blocks asked for and not yet written, in
    /// KiB permits.
    pub budget: Arc<Semaphore>,
    /// Our file at this path (an older version): a block fetched from a
    /// peer is asked as a patch of the block at the same place in it, so an
    /// edit costs its changed chunks (see [`tandem_common::delta`]).
    pub base: Option<PathBuf>,
    /// Ask peers to check each block against its hash before sending it
    /// (an earlier try failed; see `PeerMessage::GetBlocks::verify`).
    pub verify: bool,
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
    /// What arrived does not match its hash: a block (the peer sent other
    /// bytes than its list says), or a small file's whole content.
    ContentMismatch,
    /// The version's block list does not make its content hash (see
    /// `tandem_common::hashing`): it is fetched again.
    BadList,
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

/// The plan's blocks in segments: runs of local or remote blocks, each of
/// at most [`SEGMENT_BLOCKS`] blocks (remote ones at most `remote_max`).
fn segments(plan: &[BlockSource], remote_max: usize) -> VecDeque<Segment> {
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
            (BlockSource::Remote, Some(Segment::Remote(v))) if v.len() < remote_max => v.push(i),
            (BlockSource::Remote, _) => out.push_back(Segment::Remote(vec![i])),
        }
    }
    out
}

impl Segment {
    /// Bytes of its blocks in a file of `size` bytes.
    fn bytes(&self, size: u64) -> u64 {
        let len = |i: usize| block_len(size, i) as u64;
        match self {
            Segment::Local(v) => v.iter().map(|&(i, ..)| len(i)).sum(),
            Segment::Remote(v) => v.iter().map(|&i| len(i)).sum(),
        }
    }
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

/// What one segment brought.
#[derive(Default)]
struct Got {
    /// (block index, bytes), in order.
    blocks: Vec<(usize, Bytes)>,
    /// Bytes that crossed the network.
    received: u64,
    /// Bytes taken from local files (whole blocks, and what patches of our
    /// older copy did not carry).
    reused: u64,
    /// The peer that answered, if one was asked.
    from: Option<NodeId>,
    /// The budget taken for the remote blocks: given back once they are
    /// written, so the budget bounds what is held, not only what is asked.
    held: Option<OwnedSemaphorePermit>,
}

type SegmentResult = Result<Got, Failure>;

async fn run_inner(job: Job) -> Result<Done, Failure> {
    let started = Instant::now();
    // Every block is checked against its hash as it comes (from a peer or
    // a local file), so the file is the version's content exactly when the
    // list makes the content hash (see `tandem_common::hashing`).
    if root_of(&job.entry.blocks, job.entry.size) != Some(job.entry.hash) {
        return Err(Failure::new(
            Cause::BadList,
            format!(
                "the block list of {} does not make its content hash; asking for it again",
                job.entry.path
            ),
        ));
    }
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

    let remote_max = if job.base.is_some() {
        PATCHED_SEGMENT_BLOCKS
    } else {
        SEGMENT_BLOCKS
    };
    let mut segs = segments(&job.plan, remote_max);
    let mut inflight = futures::stream::FuturesOrdered::new();
    // Bytes of each segment in flight, in order (as their results come).
    let mut inflight_bytes: VecDeque<u64> = VecDeque::new();
    let (mut received, mut reused, mut from) = (0u64, 0u64, None);
    loop {
        while inflight.len() < WINDOW {
            let Some(bytes) = segs.front().map(|s| s.bytes(size)) else {
                break;
            };
            if !inflight_bytes.is_empty()
                && inflight_bytes.iter().sum::<u64>() + bytes > WINDOW_BYTES
            {
                break;
            }
            let Some(seg) = segs.pop_front() else { break };
            inflight_bytes.push_back(bytes);
            let (entry, links, peers, budget, base) = (
                entry.clone(),
                job.links.clone(),
                job.peers.clone(),
                job.budget.clone(),
                job.base.clone(),
            );
            let verify = job.verify;
            inflight.push_back(async move {
                let source = Source {
                    links: &links,
                    peers: &peers,
                    base: base.as_deref(),
                    verify,
                };
                fetch_segment(seg, &entry, &source, &budget).await
            });
        }
        let Some(res): Option<SegmentResult> = futures::StreamExt::next(&mut inflight).await else {
            break;
        };
        inflight_bytes.pop_front();
        let Got {
            blocks,
            received: got,
            reused: local,
            from: peer,
            held,
        } = res?;
        received += got;
        reused += local;
        if peer.is_some() {
            from = peer;
        }
        let f = file.clone();
        // A segment's blocks are consecutive, sorted.
        let span = blocks
            .first()
            .zip(blocks.last())
            .map(|((first, _), (last, data))| {
                *first as u64 * BLOCK_SIZE..*last as u64 * BLOCK_SIZE + data.len() as u64
            });
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            for (i, data) in blocks {
                f.write_all_at(&data, i as u64 * BLOCK_SIZE)?;
            }
            drop(held);
            if let Some(span) = span {
                start_writeback(&f, span);
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot write temp file: {e}"))?;
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

/// Starts writing `range` of `f` to disk, without waiting for it: the
/// `fsync` at the end then finds most of the file written already, instead
/// of writing all of it while the transfer waits (4 KiB edit of a 256 MiB
/// file, its 256 MiB copied from the old copy: 0.51 -> 0.41 s). Only a
/// hint: if it fails, that `fsync` writes everything, and its errors count.
fn start_writeback(f: &File, range: std::ops::Range<u64>) {
    if range.is_empty() {
        return;
    }
    let (Ok(at), Ok(len)) = (
        i64::try_from(range.start),
        i64::try_from(range.end - range.start),
    ) else {
        return;
    };
    // SAFETY: sync_file_range only reads the descriptor, which `f` keeps
    // open; it does not touch memory of ours.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), at, len, libc::SYNC_FILE_RANGE_WRITE);
    }
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
    /// Counted as held in `pace` (the data may have been taken out
    /// meanwhile).
    len: usize,
    pace: Arc<crate::pace::Pace>,
}

impl Given {
    /// Holds `data`, counted in `pace`.
    pub fn new(data: FileData, pace: &Arc<crate::pace::Pace>) -> Self {
        let len = data.0.len();
        pace.hold(len);
        Given {
            data,
            len,
            pace: pace.clone(),
        }
    }
}

impl Drop for Given {
    fn drop(&mut self) {
        self.pace.release(self.len);
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
/// right length. Block contents are not hashed here: a fetch for a client
/// hashes the whole content as it streams it.
pub fn check_blocks(size: u64, asked: &[usize], got: Vec<BlockData>) -> Result<Vec<Bytes>, String> {
    let whole = vec![false; asked.len()];
    let got = check_answer(size, asked, &whole, got)?;
    Ok(got.into_iter().map(|b| b.bytes).collect())
}

/// Checks an answer to blocks `asked` (`with_base`: which were asked with
/// a base, and so may come as some of their chunks): one per block asked,
/// in order, each of its block's length or its chunks' length.
fn check_answer(
    size: u64,
    asked: &[usize],
    with_base: &[bool],
    got: Vec<BlockData>,
) -> Result<Vec<BlockData>, String> {
    if got.len() != asked.len() {
        return Err(format!("sent {} blocks, {} asked", got.len(), asked.len()));
    }
    got.into_iter()
        .zip(asked.iter().zip(with_base))
        .map(|(b, (&i, &based))| {
            let len = block_len(size, i);
            if b.patch.is_some() && !based {
                return Err(format!("block {i} was sent as chunks but asked whole"));
            }
            let fits = match b.patch {
                None => b.bytes.len() == len,
                Some(mask) => delta::masked_len(len, mask) == Ok(b.bytes.len()),
            };
            if b.index as usize != i || !fits {
                return Err(format!("block {i} has the wrong index or size"));
            }
            Ok(b)
        })
        .collect()
}

/// Checks each block of an answer sent whole against its hash (a block
/// sent as chunks is checked once put together, in `assemble`).
fn check_whole_blocks(
    entry: &FileEntry,
    blocks: Vec<BlockData>,
    peer: &str,
) -> Result<Vec<BlockData>, Failure> {
    for b in blocks.iter().filter(|b| b.patch.is_none()) {
        let i = b.index as usize;
        if entry.blocks.get(i) != Some(&block_hash(&b.bytes, i, entry.size)) {
            return Err(Failure::new(
                Cause::ContentMismatch,
                format!(
                    "{peer}: block {i} of {} does not match its hash (the file changed there, or the peer sent other bytes than its list says); asking again with the peer checking",
                    entry.path
                ),
            ));
        }
    }
    Ok(blocks)
}

/// A request to a peer failed: say which peer, and whether its link closed
/// (asked of the link itself: a peer could send any kind of refusal).
fn link_failure(link: &LinkHandle, e: PeerError) -> Failure {
    let cause = if link.is_closed() {
        Cause::LinkClosed
    } else {
        Cause::Other
    };
    Failure::new(cause, format!("{}: {e}", link.name))
}

/// [`Links::ask`] with the transfers' deadline.
async fn ask_peer<T, F, Fut>(
    links: &Links,
    peer: &NodeId,
    ask: F,
) -> Option<(Arc<LinkHandle>, Result<T, PeerError>)>
where
    F: Fn(Arc<LinkHandle>) -> Fut,
    Fut: std::future::Future<Output = Result<T, PeerError>>,
{
    // Each try as long as one request may take (three at most).
    links
        .ask(peer, REQUEST_TIMEOUT, 4 * REQUEST_TIMEOUT, ask)
        .await
}

/// Gets the complete block list of `entry` (announced without one) from
/// the first of `peers` that can give it. With `ours` (our block list of
/// another version of the path) the peer's group hashes are asked first,
/// and only the groups that differ are fetched; the others are taken from
/// `ours`. Without it, every group is fetched (a new file: the group round
/// would only add a round trip). Each part is checked (group hashes,
/// lengths), and the list must make the content hash (see
/// `tandem_common::hashing`): each block is then checked against it.
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
        .map_err(|e| format!("bad block list of {} from {peer:?}: {e}", entry.path))
        .and_then(|list| match root_of(&list, entry.size) {
            Some(h) if h == entry.hash => Ok(list),
            _ => Err(format!(
                "the block list of {} from {peer:?} does not make its content hash",
                entry.path
            )),
        });
    Some(merged)
}

/// Where a transfer's remote blocks come from.
struct Source<'a> {
    links: &'a Links,
    /// Preferred first.
    peers: &'a [NodeId],
    /// Our older copy of the file (see [`Job::base`]).
    base: Option<&'a Path>,
    /// See [`Job::verify`].
    verify: bool,
}

/// Our older copy of one block: its bytes (possibly shorter than the
/// block) and their chunk hashes.
struct Base {
    bytes: Vec<u8>,
    chunks: Vec<u64>,
}

/// Reads the blocks `wanted` (index, length) from our older copy at
/// `path`; `None` where it has nothing there or cannot be read (the block
/// is then asked whole).
fn read_bases(path: &Path, wanted: &[(usize, usize)]) -> Vec<Option<Base>> {
    let Ok(f) = crate::scan::open_nofollow(path) else {
        return wanted.iter().map(|_| None).collect();
    };
    wanted
        .iter()
        .map(|&(i, len)| {
            let mut bytes = vec![0u8; len];
            let mut filled = 0;
            while filled < len {
                match f.read_at(&mut bytes[filled..], i as u64 * BLOCK_SIZE + filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return None,
                }
            }
            bytes.truncate(filled);
            (filled > 0).then(|| Base {
                chunks: delta::chunk_hashes(&bytes),
                bytes,
            })
        })
        .collect()
}

/// `bytes` in the budget's KiB permits (at least one).
fn kib(bytes: usize) -> u32 {
    bytes.div_ceil(1024).max(1) as u32
}

/// Reads the blocks `wanted` (block, file, its block there) of lengths
/// `lens` from local files into `buf` (their lengths' sum), each checked
/// against its hash in `hashes`: each block's bytes, or `None` if its file
/// could not be read or no longer has it.
fn read_local(
    wanted: Vec<(usize, PathBuf, u32)>,
    size: u64,
    lens: &[usize],
    hashes: &[ContentHash],
    mut buf: Vec<u8>,
) -> Vec<(usize, Option<Bytes>)> {
    // Consecutive blocks mostly come from one file: opened once for them.
    let mut open: Option<(PathBuf, std::io::Result<File>)> = None;
    let mut at = 0;
    let mut spans = Vec::with_capacity(wanted.len());
    for (((i, path, index), &len), hash) in wanted.into_iter().zip(lens).zip(hashes) {
        let (_, f) = match open.take() {
            Some((p, f)) if p == path => open.insert((p, f)),
            _ => {
                let f = crate::scan::open_nofollow(&path);
                open.insert((path, f))
            }
        };
        let block = &mut buf[at..at + len];
        let ok = f
            .as_ref()
            .is_ok_and(|f| f.read_exact_at(block, index as u64 * BLOCK_SIZE).is_ok())
            && block_hash(block, i, size) == *hash;
        spans.push((i, ok.then_some(at..at + len)));
        at += len;
    }
    let bytes = SEGMENTS.freeze(buf);
    spans
        .into_iter()
        .map(|(i, span)| (i, span.map(|r| bytes.slice(r))))
        .collect()
}

/// Reads or fetches one segment.
async fn fetch_segment(
    seg: Segment,
    entry: &FileEntry,
    source: &Source<'_>,
    budget: &Arc<Semaphore>,
) -> SegmentResult {
    let mut got = Got::default();
    let mut missing = Vec::new();
    let local = matches!(seg, Segment::Local(_));
    match seg {
        Segment::Remote(v) => missing = v,
        Segment::Local(v) => {
            // One buffer for the segment's blocks, kept for reuse (see
            // `tandem_common::buffers`: a fresh buffer per block made
            // copying a 256 MiB file's blocks 7 times slower). Made here,
            // not on the blocking thread, for the reason given in
            // `serve_blocks` (malloc arenas).
            let lens: Vec<usize> = v.iter().map(|&(i, ..)| block_len(entry.size, i)).collect();
            let buf = SEGMENTS.take(lens.iter().sum());
            let hashes: Vec<ContentHash> = v.iter().map(|&(i, ..)| entry.blocks[i]).collect();
            let size = entry.size;
            let read =
                tokio::task::spawn_blocking(move || read_local(v, size, &lens, &hashes, buf))
                    .await
                    .map_err(|e| e.to_string())?;
            for (i, data) in read {
                match data {
                    Some(d) => {
                        got.reused += d.len() as u64;
                        got.blocks.push((i, d));
                    }
                    None => missing.push(i),
                }
            }
        }
    }
    if !missing.is_empty() {
        let bytes: usize = missing.iter().map(|&i| block_len(entry.size, i)).sum();
        // With an older copy, its blocks are held beside what arrives.
        let held = if source.base.is_some() {
            2 * bytes
        } else {
            bytes
        };
        let permits = kib(held);
        got.held = if local {
            // Blocks a local copy did not have (it differed or could not be
            // read): this segment's turn for the budget came and went, and
            // the later segments of this transfer may hold it while they
            // wait to be written after this one, so waiting here could wait
            // for ever. Taken only if free.
            budget.clone().try_acquire_many_owned(permits).ok()
        } else {
            // Remote segments wait their turn, in order, so within a
            // transfer an earlier segment never waits behind a later one:
            // segments are first polled in the order they were pushed
            // (`FuturesOrdered`), nothing is awaited before this acquire,
            // and tokio's semaphore serves waiters first come, first served
            // (a newcomer takes nothing while anyone waits).
            Some(
                budget
                    .clone()
                    .acquire_many_owned(permits)
                    .await
                    .map_err(|_| "shutting down".to_string())?,
            )
        };
        let bases = match source.base {
            Some(path) => {
                let wanted: Vec<(usize, usize)> = missing
                    .iter()
                    .map(|&i| (i, block_len(entry.size, i)))
                    .collect();
                let path = path.to_path_buf();
                tokio::task::spawn_blocking(move || read_bases(&path, &wanted))
                    .await
                    .map_err(|e| e.to_string())?
            }
            None => missing.iter().map(|_| None).collect(),
        };
        let (peer, answered) = fetch_remote(entry, &missing, bases, source).await?;
        // Our older copy's blocks are gone now: only what arrived is held.
        if let Some(p) = got.held.as_mut()
            && held > bytes
        {
            drop(p.split(p.num_permits().saturating_sub(kib(bytes) as usize)));
        }
        got.from = Some(peer);
        let mut again = Vec::new();
        for (&i, a) in missing.iter().zip(answered) {
            got.received += a.sent;
            match a.block {
                Some(d) => {
                    // What a patch did not carry came from our older copy.
                    got.reused += d.len() as u64 - a.sent;
                    got.blocks.push((i, d));
                }
                None => again.push(i),
            }
        }
        if !again.is_empty() {
            // A patched block did not come out right (the peer's chunks and
            // our copy do not make the block): ask for those whole.
            tracing::debug!("{} blocks of {} asked again whole", again.len(), entry.path);
            let none = again.iter().map(|_| None).collect();
            let (_, answered) = fetch_remote(entry, &again, none, source).await?;
            for (&i, a) in again.iter().zip(answered) {
                got.received += a.sent;
                // A block asked whole is always there.
                got.blocks.extend(a.block.map(|d| (i, d)));
            }
        }
    }
    got.blocks.sort_by_key(|(i, _)| *i);
    Ok(got)
}

/// One block as answered by a peer.
struct Answered {
    /// The block (`None`: a patch that did not make the block).
    block: Option<Bytes>,
    /// Bytes the peer sent for it.
    sent: u64,
}

/// The block `b` of `entry` as answered: whole, or its sent chunks put
/// together with our older copy `base`, which must then make the block's
/// hash (`None` if not: it is asked again whole).
fn assemble(entry: &FileEntry, b: BlockData, base: Option<Base>) -> Answered {
    let sent = b.bytes.len() as u64;
    let block = match (b.patch, base) {
        (None, _) => Some(b.bytes),
        (Some(mask), Some(base)) => {
            let i = b.index as usize;
            delta::patch(&base.bytes, block_len(entry.size, i), mask, &b.bytes)
                .ok()
                .filter(|p| entry.blocks.get(i) == Some(&block_hash(p, i, entry.size)))
                .map(Bytes::from)
        }
        // Chunks of a block asked whole (refused by `check_answer` first).
        (Some(_), None) => None,
    };
    Answered { block, sent }
}

/// Asks the first peer that answers for the blocks `missing`, those with a
/// base in `bases` (one per block) as patches of it. Returns the peer and
/// each block as answered, in order; the bases are gone once the patched
/// blocks are made.
async fn fetch_remote(
    entry: &FileEntry,
    missing: &[usize],
    bases: Vec<Option<Base>>,
    source: &Source<'_>,
) -> Result<(NodeId, Vec<Answered>), Failure> {
    let mut last = Failure::from("no peer that has this version is connected".to_string());
    let idx: Vec<u32> = missing.iter().map(|&i| i as u32).collect();
    let wire: Vec<BlockBase> = missing
        .iter()
        .zip(&bases)
        .filter_map(|(&i, b)| {
            b.as_ref().map(|b| BlockBase {
                block: i as u32,
                chunks: b.chunks.clone(),
            })
        })
        .collect();
    let with_base: Vec<bool> = bases.iter().map(Option::is_some).collect();
    for peer in source.peers {
        let ask = |link: Arc<LinkHandle>| {
            let (path, idx, wire) = (entry.path.clone(), idx.clone(), wire.clone());
            let verify = source.verify;
            async move { link.get_blocks(path, entry.hash, idx, wire, verify).await }
        };
        let Some((link, res)) = ask_peer(source.links, peer, ask).await else {
            continue;
        };
        let checked = match res {
            Ok(blocks) => check_answer(entry.size, missing, &with_base, blocks)
                .map_err(|why| Failure::from(format!("{}: {why}", link.name)))
                .and_then(|blocks| check_whole_blocks(entry, blocks, &link.name)),
            Err(e) => Err(link_failure(&link, e)),
        };
        match checked {
            Ok(blocks) => {
                let answered = blocks
                    .into_iter()
                    .zip(bases)
                    .map(|(b, base)| assemble(entry, b, base))
                    .collect();
                return Ok((*peer, answered));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks read from local files into a buffer that held other bytes
    /// (as a kept one does): each block that is there and matches comes
    /// back exactly; one that does not match (changed, or the same bytes at
    /// another offset: a block's hash is of its place), or whose file is
    /// missing, does not come back at all.
    #[test]
    fn local_blocks_are_read_exactly_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let bs = BLOCK_SIZE as usize;
        let want: Vec<u8> = (0..4 * bs + 100)
            .map(|i| ((i % 253) ^ (i >> 17)) as u8)
            .collect();
        let size = want.len() as u64;
        let list = tandem_common::hashing::hash_reader(&want[..])
            .unwrap()
            .blocks;
        let mut changed = want.clone();
        changed[3 * bs + 5] ^= 0xff;
        let (pa, pb) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&pa, &want).unwrap();
        std::fs::write(&pb, &changed).unwrap();
        let gone = dir.path().join("gone");
        let wanted = vec![
            (0, pa.clone(), 0),
            (4, pa.clone(), 4),
            (1, pa.clone(), 1),
            // Block 1's bytes for block 2.
            (2, pa.clone(), 1),
            (3, pb.clone(), 3),
            (2, gone, 2),
        ];
        let lens: Vec<usize> = wanted.iter().map(|w| block_len(size, w.0)).collect();
        let hashes: Vec<ContentHash> = wanted.iter().map(|w| list[w.0]).collect();
        let stale = vec![0xa5u8; lens.iter().sum()];
        let got = read_local(wanted, size, &lens, &hashes, stale);
        let got: Vec<(usize, Option<Vec<u8>>)> = got
            .into_iter()
            .map(|(i, d)| (i, d.map(|d| d.to_vec())))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, Some(want[..bs].to_vec())),
                (4, Some(want[4 * bs..].to_vec())),
                (1, Some(want[bs..2 * bs].to_vec())),
                (2, None),
                (3, None),
                (2, None),
            ]
        );
    }

    /// Runs of local and remote blocks, cut at their most; bytes counted
    /// with the short last block.
    #[test]
    fn plans_are_cut_into_segments_of_at_most_their_size() {
        let local = |i: u32| BlockSource::Local {
            path: PathBuf::from("/f"),
            index: i,
        };
        let mut plan: Vec<BlockSource> = (0..20).map(local).collect();
        plan.extend((0..20).map(|_| BlockSource::Remote));
        plan.push(local(40));
        plan.push(BlockSource::Remote);
        let lens = |remote_max| -> Vec<(bool, usize)> {
            segments(&plan, remote_max)
                .iter()
                .map(|s| match s {
                    Segment::Local(v) => (true, v.len()),
                    Segment::Remote(v) => (false, v.len()),
                })
                .collect()
        };
        assert_eq!(
            lens(SEGMENT_BLOCKS),
            vec![
                (true, 16),
                (true, 4),
                (false, 16),
                (false, 4),
                (true, 1),
                (false, 1)
            ]
        );
        assert_eq!(
            lens(PATCHED_SEGMENT_BLOCKS),
            vec![
                (true, 16),
                (true, 4),
                (false, 8),
                (false, 8),
                (false, 4),
                (true, 1),
                (false, 1)
            ]
        );
        let size = 41 * BLOCK_SIZE + 10;
        let segs = segments(&plan, SEGMENT_BLOCKS);
        assert_eq!(segs[0].bytes(size), 16 * BLOCK_SIZE);
        assert_eq!(segs[5].bytes(size), 10);
    }

    #[test]
    fn a_patched_block_counts_only_if_it_makes_the_block() {
        let old = vec![3u8; BLOCK_SIZE as usize];
        let mut new = old.clone();
        new[100..200].fill(9);
        let hashed = tandem_common::hashing::hash_reader(&new[..]).expect("hash");
        let entry = FileEntry {
            path: RelPath::new("f").expect("path"),
            kind: tandem_common::EntryKind::File,
            size: hashed.size,
            mtime_ns: 0,
            mode: 0o644,
            hash: hashed.hash,
            blocks: hashed.blocks,
            version: Default::default(),
            written: Default::default(),
            losers: Default::default(),
            deleted: false,
        };
        let base = |bytes: &[u8]| {
            Some(Base {
                chunks: delta::chunk_hashes(&old),
                bytes: bytes.to_vec(),
            })
        };
        let mask = delta::changed_chunks(&new, &delta::chunk_hashes(&old));
        assert_eq!(mask, 1);
        let mut sent = Vec::new();
        delta::take_chunks(&new, mask, &mut sent);
        let answer = |bytes: &[u8]| BlockData::chunks(0, mask, Bytes::copy_from_slice(bytes));
        let got = assemble(&entry, answer(&sent), base(&old));
        assert_eq!(got.block.as_deref(), Some(&new[..]));
        assert_eq!(got.sent, delta::CHUNK_SIZE as u64);
        // Wrong chunks, or a base that changed meanwhile: asked again (the
        // bytes sent still count as received).
        sent[150] ^= 1;
        let got = assemble(&entry, answer(&sent), base(&old));
        assert_eq!((got.block, got.sent), (None, delta::CHUNK_SIZE as u64));
        sent[150] ^= 1;
        let changed = vec![4u8; BLOCK_SIZE as usize];
        assert_eq!(assemble(&entry, answer(&sent), base(&changed)).block, None);
        // Chunks without a base cannot make a block.
        assert_eq!(assemble(&entry, answer(&sent), None).block, None);
        // A whole block is taken as it is (the file's hash checks it).
        let whole = BlockData::new(0, Bytes::from(new.clone()));
        assert_eq!(
            assemble(&entry, whole, None).block.as_deref(),
            Some(&new[..])
        );
    }

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
        // Chunks of a block asked whole (the client's fetch asks no bases).
        let chunks = vec![BlockData::chunks(0, 1, Bytes::from(vec![0u8; 4096]))];
        let e = check_blocks(size, &[0], chunks.clone()).unwrap_err();
        assert!(e.contains("sent as chunks but asked whole"), "{e}");
        // Asked with a base: chunks of the right length pass, others not.
        assert!(check_answer(size, &[0], &[true], chunks).is_ok());
        let wrong = vec![BlockData::chunks(0, 0b11, Bytes::from(vec![0u8; 4096]))];
        let e = check_answer(size, &[0], &[true], wrong).unwrap_err();
        assert!(e.contains("wrong index or size"), "{e}");
    }
}
