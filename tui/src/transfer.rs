//! Fetch and put for the one-shot subcommands: files are written to a temp
//! name in the destination directory, hash-checked, fsynced and renamed, so
//! a partial file never appears under the real name.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tandem_common::proto::{ApiError, ClientRequest, ClientResponse, ListedFile};
use tandem_common::{ContentHash, RelPath};
use tokio_util::sync::CancellationToken;

use crate::client::{Answers, Client, ClientError};

/// Upload pieces.
const PUT_CHUNK: usize = 1024 * 1024;

/// A fetch would replace a local file and was not told to (`--force`).
/// Callers add how to force it in their own words (a flag, a UI command).
#[derive(Debug, thiserror::Error)]
#[error("{} already exists; nothing was fetched", .0.display())]
pub struct WouldOverwrite(pub PathBuf);

/// A fetch was cancelled (its token fired): the partial download was
/// removed and nothing was saved.
#[derive(Debug, thiserror::Error)]
#[error("cancelled; nothing was saved")]
pub struct Cancelled;

/// What to fetch: a file of the cluster, or a conflict copy kept on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// The newest version of a file.
    File {
        /// Its path in the cluster.
        path: RelPath,
        /// From this node (by name); the best holder when `None`.
        from: Option<String>,
    },
    /// A kept conflict copy.
    Copy {
        /// The node that keeps it.
        node: String,
        /// Its id there, which is its place in that node's conflicts
        /// folder (`notes/plan.conflict-20261203-060000-B.txt`).
        id: RelPath,
    },
}

impl Wanted {
    /// The newest version of `path`, from the best holder.
    pub fn file(path: RelPath) -> Wanted {
        Wanted::File { path, from: None }
    }

    /// The conflict copy `copy`; `None` when its id is not a path (the
    /// node would not list such a copy).
    pub fn copy(copy: &tandem_common::proto::ConflictCopy) -> Option<Wanted> {
        Some(Wanted::Copy {
            node: copy.node.clone(),
            id: RelPath::new(&copy.id).ok()?,
        })
    }

    /// Where it is, as a path: the file's, or the copy's place in its
    /// conflicts folder. Its last part is the name it is saved under.
    pub fn rel(&self) -> &RelPath {
        match self {
            Wanted::File { path, .. } => path,
            Wanted::Copy { id, .. } => id,
        }
    }

    fn request(&self) -> ClientRequest {
        match self {
            Wanted::File { path, from } => ClientRequest::Fetch {
                path: path.clone(),
                from: from.clone(),
            },
            Wanted::Copy { node, id } => ClientRequest::FetchConflict {
                node: node.clone(),
                id: id.as_str().to_string(),
            },
        }
    }
}

impl std::fmt::Display for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wanted::File { path, .. } => write!(f, "{path}"),
            Wanted::Copy { node, id } => write!(f, "the conflict copy {id} kept on {node}"),
        }
    }
}

/// What a finished fetch wrote.
pub struct Fetched {
    /// The file as listed.
    pub file: ListedFile,
    /// Where it was saved.
    pub dest: PathBuf,
    /// The node it came from.
    pub from: String,
}

fn progress(total: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    // Rate and time left in the words the UI's fetch gauge uses.
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {rate} ~{left}",
    ) {
        let style = style
            .with_key(
                "rate",
                |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&tandem_common::display::rate(st.per_sec() as u64));
                },
            )
            .with_key(
                "left",
                |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&tandem_common::display::eta(st.eta().as_secs()));
                },
            );
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// How a fetch is going, for a progress display.
pub enum FetchProgress<'a> {
    /// The node answered: this file, from that node.
    Started(&'a ListedFile, &'a str),
    /// Bytes received so far.
    Received(u64),
}

/// Fetches `path` into the directory `to`, retrying when the file changes
/// while it is being sent. `progress` hears how it goes. A file already
/// there is replaced only with `force`; otherwise the error is
/// [`WouldOverwrite`], before anything is asked of the node (and checked
/// again, atomically, when the download is put in place). When `cancel`
/// fires the error is [`Cancelled`], with the partial download removed.
pub async fn fetch(
    c: &Client,
    what: &Wanted,
    to: &Path,
    force: bool,
    cancel: Option<&CancellationToken>,
    progress: &mut (dyn FnMut(FetchProgress<'_>) + Send),
) -> anyhow::Result<Fetched> {
    let mut last = None;
    for _ in 0..3 {
        match fetch_once(c, what, to, force, cancel, progress).await {
            Err(e) if e.to_string().contains("try again") => last = Some(e),
            r => return r,
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("cannot fetch {what}")))
}

/// [`fetch`] with a progress bar on a terminal (for the subcommand).
pub async fn fetch_with_bar(
    c: &Client,
    what: &Wanted,
    to: &Path,
    force: bool,
) -> anyhow::Result<Fetched> {
    let mut bar: Option<indicatif::ProgressBar> = None;
    let res = fetch(c, what, to, force, None, &mut |p| match p {
        FetchProgress::Started(file, _) => bar = Some(progress(file.size, what.rel().as_str())),
        FetchProgress::Received(n) => {
            if let Some(b) = &bar {
                b.set_position(n)
            }
        }
    })
    .await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    res
}

async fn fetch_once(
    c: &Client,
    what: &Wanted,
    to: &Path,
    force: bool,
    cancel: Option<&CancellationToken>,
    progress: &mut (dyn FnMut(FetchProgress<'_>) + Send),
) -> anyhow::Result<Fetched> {
    let meta = std::fs::metadata(to)
        .with_context(|| format!("cannot use {} as the destination", to.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", to.display());
    }
    let dest = to.join(what.rel().file_name());
    match std::fs::symlink_metadata(&dest) {
        Ok(m) if m.is_dir() => bail!(
            "{} is a folder here; nothing was fetched (give --to another folder)",
            dest.display()
        ),
        Ok(_) if !force => return Err(WouldOverwrite(dest).into()),
        _ => {}
    }
    let mut answers = c.start(what.request())?;
    let (file, source) = match next_answer(&mut answers, cancel).await? {
        Ok(ClientResponse::FetchStart { file, from }) => (file, from),
        Ok(other) => bail!("unexpected answer: {other:?}"),
        Err(ClientError::Api(ApiError::Other(m))) if m.ends_with("does not exist") => {
            bail!("{what} does not exist")
        }
        Err(e) => return Err(e.into()),
    };
    // The node names what it sends: it must be what was asked for, since
    // its name is what gets written here.
    if file.path != *what.rel() {
        bail!("asked for {what}, the node started sending {}", file.path);
    }
    progress(FetchProgress::Started(&file, &source));
    let dest = receive(&mut answers, &file, to, force, cancel, |n| {
        progress(FetchProgress::Received(n))
    })
    .await?;
    Ok(Fetched {
        file,
        dest,
        from: source,
    })
}

/// Receives the chunks of a fetch that started (`file` is what the node
/// sends) into a temp file in the directory `to`, checks the BLAKE3 hash,
/// fsyncs, gives it the file's mtime and renames it: a partial file never
/// appears under the real name, and on any error the temp file is removed.
/// `on_progress` gets the bytes received so far. Returns where it was saved.
/// Without `force` a file that appeared under the name meanwhile is not
/// replaced ([`WouldOverwrite`]). When `cancel` fires it stops at once
/// with [`Cancelled`] (the temp file removed like on any error).
pub async fn receive(
    answers: &mut Answers,
    file: &ListedFile,
    to: &Path,
    force: bool,
    cancel: Option<&CancellationToken>,
    mut on_progress: impl FnMut(u64),
) -> anyhow::Result<PathBuf> {
    let name = file.path.file_name();
    let dest = to.join(name);
    let tmp = to.join(format!(
        ".{name}.tandem-part-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let out =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let res = receive_into(
        answers,
        file,
        out,
        &tmp,
        &dest,
        force,
        cancel,
        &mut on_progress,
    )
    .await;
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map(|()| dest)
}

#[allow(clippy::too_many_arguments)]
async fn receive_into(
    answers: &mut Answers,
    file: &ListedFile,
    out: std::fs::File,
    tmp: &Path,
    dest: &Path,
    force: bool,
    cancel: Option<&CancellationToken>,
    on_progress: &mut impl FnMut(u64),
) -> anyhow::Result<()> {
    // Hashing and writing (and starting the disk writeback) run on a
    // thread of their own while this one receives and decrypts: TLS costs
    // about as much CPU as the other two together, so they overlap.
    let writer = Writer::start(out);
    let mut done = 0u64;
    let received = loop {
        let next = match next_answer(answers, cancel).await {
            Ok(next) => next,
            Err(cancelled) => break Err(cancelled.into()),
        };
        match next {
            Ok(ClientResponse::Chunk { data, last, .. }) => {
                done += data.len() as u64;
                if done > file.size {
                    break Err(anyhow::anyhow!(
                        "the node sent more than the {} bytes of {}",
                        file.size,
                        file.path
                    ));
                }
                on_progress(done);
                if !writer.write(data).await || last {
                    break Ok(());
                }
            }
            Ok(other) => break Err(anyhow::anyhow!("unexpected answer: {other:?}")),
            Err(e) => break Err(e.into()),
        }
    };
    let written = writer.finish().await;
    received?;
    let (_, hash) = written.with_context(|| format!("cannot write {}", tmp.display()))?;
    if hash != file.hash {
        bail!(
            "{} arrived damaged (BLAKE3 mismatch); nothing was saved",
            file.path
        );
    }
    let t = filetime::FileTime::from_unix_time(
        file.mtime_ns.div_euclid(1_000_000_000),
        file.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_file_mtime(tmp, t)
        .with_context(|| format!("cannot set the mtime of {}", tmp.display()))?;
    if force {
        std::fs::rename(tmp, dest).with_context(|| format!("cannot save {}", dest.display()))?;
    } else {
        rename_no_replace(tmp, dest)?;
    }
    Ok(())
}

/// The next answer, or [`Cancelled`] as soon as `cancel` fires (checked
/// first, so a stream of ready answers cannot starve it).
async fn next_answer(
    answers: &mut Answers,
    cancel: Option<&CancellationToken>,
) -> Result<Result<ClientResponse, ClientError>, Cancelled> {
    match cancel {
        None => Ok(answers.next().await),
        Some(token) => tokio::select! {
            biased;
            () = token.cancelled() => Err(Cancelled),
            r = answers.next() => Ok(r),
        },
    }
}

/// Renames `tmp` to `dest` unless `dest` exists, atomically where the file
/// system can (renameat2 with RENAME_NOREPLACE); elsewhere it checks first.
fn rename_no_replace(tmp: &Path, dest: &Path) -> anyhow::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).context("a path with a NUL byte");
    let (from, to) = (c(tmp)?, c(dest)?);
    // SAFETY: two valid NUL-terminated paths, relative to the working directory.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EEXIST) => Err(WouldOverwrite(dest.to_path_buf()).into()),
        // The file system cannot say: check, then rename (a file made in
        // between is replaced; only such file systems have that window).
        Some(libc::EINVAL | libc::ENOSYS) => {
            if std::fs::symlink_metadata(dest).is_ok() {
                return Err(WouldOverwrite(dest.to_path_buf()).into());
            }
            std::fs::rename(tmp, dest).with_context(|| format!("cannot save {}", dest.display()))
        }
        _ => Err(e).with_context(|| format!("cannot save {}", dest.display())),
    }
}

/// What the writer thread hands back: the fsynced file and the hash of
/// everything written.
type Written = (std::fs::File, ContentHash);

/// Hashes and writes a download on a thread of its own, asking the kernel
/// to start writing each few MiB to disk as it goes, so the final fsync
/// finds little left to do.
struct Writer {
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    done: std::thread::JoinHandle<std::io::Result<Written>>,
}

impl Writer {
    /// Starts writing into `out`.
    fn start(mut out: std::fs::File) -> Writer {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
        let done = std::thread::spawn(move || -> std::io::Result<Written> {
            const FLUSH_EVERY: u64 = 8 << 20;
            let (mut written, mut flushed) = (0u64, 0u64);
            let mut hasher = blake3::Hasher::new();
            while let Some(data) = rx.blocking_recv() {
                hasher.update(&data);
                out.write_all(&data)?;
                written += data.len() as u64;
                if written - flushed >= FLUSH_EVERY {
                    start_writeback(&out, flushed, written - flushed);
                    flushed = written;
                }
            }
            out.sync_all()?;
            Ok((out, ContentHash(*hasher.finalize().as_bytes())))
        });
        Writer { tx, done }
    }

    /// Queues `data` (waiting while the queue is full); false when the
    /// writer has stopped (its error comes from [`Writer::finish`]).
    async fn write(&self, data: bytes::Bytes) -> bool {
        self.tx.send(data).await.is_ok()
    }

    /// Waits until everything queued is written and fsynced; the file and
    /// its hash, or the first error.
    async fn finish(self) -> std::io::Result<Written> {
        drop(self.tx);
        let done = self.done;
        tokio::task::spawn_blocking(move || done.join())
            .await
            .map_err(std::io::Error::other)?
            .unwrap_or_else(|_| Err(std::io::Error::other("the writer thread panicked")))
    }
}

/// Asks the kernel to start writing a range of `f` to disk now (a hint: the
/// fsync at the end is what makes it durable).
fn start_writeback(f: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: only reads the descriptor, which `f` keeps open.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Uploads `local` as `path`. A file already at `path` in the cluster is
/// replaced only with `force`, or when it is locked: the node then lets
/// the lock's owner replace it and tells anyone else who holds it.
pub async fn put(c: &Client, local: &Path, path: &RelPath, force: bool) -> anyhow::Result<u64> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(local).with_context(|| format!("cannot read {}", local.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", local.display());
    }
    if !force {
        // The cluster's table, not only this node's disk: a file another
        // node has counts. (A file made between this look and the upload
        // is replaced; the node does not know --force.)
        // Read page by page, keeping only that path's row.
        let mut existing = None;
        c.list_each(|page| {
            if existing.is_none() {
                existing = page.into_iter().find(|f| f.path == *path);
            }
            Ok(())
        })
        .await?;
        if let Some(f) = existing
            && f.locked_by.is_none()
        {
            bail!(
                "{path} already exists in the cluster ({}, on {}); nothing was uploaded. Add --force to replace it",
                tandem_common::display::human_size(f.size),
                f.nodes.join(", ")
            );
        }
    }
    let hashed = tandem_common::hashing::hash_reader(
        std::fs::File::open(local).with_context(|| format!("cannot read {}", local.display()))?,
    )?;
    let mtime = filetime::FileTime::from_last_modification_time(&meta);
    let mtime_ns = mtime.unix_seconds() * 1_000_000_000 + i64::from(mtime.nanoseconds());
    let mut answers = c.start(ClientRequest::Put {
        path: path.clone(),
        size: hashed.size,
        hash: hashed.hash,
        mtime_ns,
        mode: meta.permissions().mode() & 0o7777,
    })?;
    let pb = progress(hashed.size, path.as_str());
    let mut f = std::fs::File::open(local)?;
    let mut buf = vec![0u8; PUT_CHUNK];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        c.post(ClientRequest::PutData {
            data: buf[..n].to_vec(),
        })?;
        pb.inc(n as u64);
    }
    c.post(ClientRequest::PutData { data: Vec::new() })?;
    let r = answers.next().await;
    pb.finish_and_clear();
    match r? {
        ClientResponse::Stored { .. } => Ok(hashed.size),
        other => bail!("unexpected answer: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(data: &[u8]) -> ListedFile {
        ListedFile {
            link: None,
            path: RelPath::new("docs/big.bin").unwrap(),
            size: data.len() as u64,
            mtime_ns: 0,
            hash: ContentHash::of(data),
            nodes: vec!["alpha".into()],
            locked_by: None,
            held: 0,
            states: Vec::new(),
        }
    }

    fn chunk(data: &[u8], last: bool) -> ClientResponse {
        ClientResponse::chunk(bytes::Bytes::copy_from_slice(data), last)
    }

    fn names(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Cancelled half way: the error is `Cancelled`, and neither the file
    /// nor its temp file is left in the folder.
    #[tokio::test]
    async fn a_cancelled_receive_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 4096];
        let (tx, mut answers) = Answers::scripted();
        tx.try_send(chunk(&data[..1024], false)).unwrap();
        let token = CancellationToken::new();
        let mut seen = 0;
        let cancel = token.clone();
        let r = receive(
            &mut answers,
            &listed(&data),
            dir.path(),
            false,
            Some(&token),
            |n| {
                seen = n;
                // Half way, the temp file is there: cancel now.
                assert!(names(dir.path()).iter().any(|n| n.contains("tandem-part")));
                cancel.cancel();
            },
        )
        .await;
        assert_eq!(seen, 1024);
        let e = r.expect_err("cancelled");
        assert!(e.is::<Cancelled>(), "{e:#}");
        assert_eq!(names(dir.path()), Vec::<String>::new());
        drop(tx);
    }

    /// The same chunks without a cancel arrive whole.
    #[tokio::test]
    async fn an_uncancelled_receive_saves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 4096];
        let (tx, mut answers) = Answers::scripted();
        tx.try_send(chunk(&data[..1024], false)).unwrap();
        tx.try_send(chunk(&data[1024..], true)).unwrap();
        let token = CancellationToken::new();
        let saved = receive(
            &mut answers,
            &listed(&data),
            dir.path(),
            false,
            Some(&token),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(saved, dir.path().join("big.bin"));
        assert_eq!(std::fs::read(&saved).unwrap(), data);
        assert_eq!(names(dir.path()), vec!["big.bin".to_string()]);
    }
}
