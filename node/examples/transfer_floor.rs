//! The cheapest transfer of a tree between two ends that keeps the promises
//! a Tandem sync makes on the wire and on disk: one TLS 1.3 connection over
//! loopback, set up as the nodes set theirs up (`tandem_common::tls`: the
//! same provider, ciphers and certificate checks), carries every file; the
//! receiving end writes each under a temp name in a folder of its own (as
//! the node's state folder), makes it durable (`fsync`, on one of four
//! threads while the next file arrives), and renames it into place with
//! `RENAME_NOREPLACE`; the folders are made durable at the end. (Its
//! identity key is made inside the timed run: a few milliseconds.) No index,
//! no block list, no questions and answers: what is left is what
//! encryption, loopback TCP and durable, atomic installs charge.
//! `bench/sync.sh` case 2 times it beside `cp -a` + `sync` in the same run,
//! as the floor under the large-file row.
//!
//! ```text
//! cargo run --release -p tandem-node --example transfer_floor -- SRC DST TMP
//! ```
//!
//! With `FLOOR_HASH=1` both ends also hash every byte with BLAKE3 (the
//! sender as it reads, the receiver as it writes), as a sync by content
//! hashes must at least once on each side. With `FLOOR_HASH=receiver` only
//! the receiver does: a sender that indexed its files hashed them then,
//! before the transfer (a Tandem node sends the blocks of a file whose
//! stat has not changed since without hashing them again).
//!
//! The two ends run in this one process, each on a thread with a runtime
//! of its own, as two nodes on one machine would run on its two cores.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tandem_common::identity::KeyPair;
use tandem_common::tls::Tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What one read or write moves: eight of the node's 128 KiB blocks, so
/// fewer calls than the node makes (a floor errs low).
const CHUNK: usize = 1 << 20;

/// Threads that flush and rename received files (the node has four writers).
const SYNCERS: usize = 4;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        bail!("usage: transfer_floor SRC DST TMP");
    }
    let (src, dst, tmp) = (
        PathBuf::from(&args[1]),
        PathBuf::from(&args[2]),
        PathBuf::from(&args[3]),
    );
    let (send_hash, receive_hash) = match std::env::var("FLOOR_HASH").as_deref() {
        Ok("1") => (true, true),
        Ok("receiver") => (false, true),
        _ => (false, false),
    };
    fs::create_dir_all(&tmp).with_context(|| format!("cannot make {}", tmp.display()))?;
    fs::create_dir_all(&dst).with_context(|| format!("cannot make {}", dst.display()))?;
    let (key, _) = KeyPair::load_or_create(&tmp.join("key.pem"))?;
    let tls = Tls::node(&key)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;

    let rx_tls = tls.clone();
    let receiver = std::thread::spawn(move || -> anyhow::Result<u64> {
        runtime()?.block_on(async move {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let (sock, _) = listener.accept().await?;
            sock.set_nodelay(true)?;
            let (stream, _, _) = rx_tls.accept(sock).await?;
            receive(stream, &dst, &tmp, receive_hash).await
        })
    });
    let sent = runtime()?.block_on(async move {
        let sock = tokio::net::TcpStream::connect(addr).await?;
        sock.set_nodelay(true)?;
        let (stream, _) = tls.connect(sock).await?;
        send(stream, &src, send_hash).await
    })?;
    let got = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("the receiving end panicked"))??;
    if got != sent {
        bail!("sent {sent} bytes, received {got}");
    }
    Ok(())
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Sends each file under `src` as: path length (u32), path, mode (u32),
/// size (u64), content; then a zero path length.
async fn send<S>(mut out: S, src: &Path, hash: bool) -> anyhow::Result<u64>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    for e in walkdir::WalkDir::new(src).sort_by_file_name() {
        let e = e?;
        let meta = e.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let rel = e.path().strip_prefix(src)?.as_os_str().as_bytes().to_vec();
        let mut f =
            File::open(e.path()).with_context(|| format!("cannot read {}", e.path().display()))?;
        out.write_all(&u32::try_from(rel.len())?.to_le_bytes())
            .await?;
        out.write_all(&rel).await?;
        out.write_all(&(meta.mode() & 0o7777).to_le_bytes()).await?;
        out.write_all(&meta.len().to_le_bytes()).await?;
        let mut hasher = hash.then(blake3::Hasher::new);
        let mut left = meta.len();
        while left > 0 {
            let n = f.read(&mut buf[..CHUNK.min(left as usize)])?;
            if n == 0 {
                bail!("{} shrank while it was sent", e.path().display());
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&buf[..n]);
            }
            out.write_all(&buf[..n]).await?;
            left -= n as u64;
            total += n as u64;
        }
        if let Some(h) = hasher {
            std::hint::black_box(h.finalize());
        }
    }
    out.write_all(&0u32.to_le_bytes()).await?;
    out.flush().await?;
    out.shutdown().await?;
    Ok(total)
}

/// Receives what [`send`] sends and installs each file durably under `dst`.
/// Each written file is handed to one of [`SYNCERS`] threads that make it
/// durable and rename it into place, so the next file is received while
/// earlier ones are flushed (as the node's writers overlap).
async fn receive<S>(mut inp: S, dst: &Path, tmp: &Path, hash: bool) -> anyhow::Result<u64>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let (tx, rx) = std::sync::mpsc::sync_channel::<(File, PathBuf, PathBuf)>(SYNCERS);
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let syncers: Vec<_> = (0..SYNCERS)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                loop {
                    let next = rx
                        .lock()
                        .map_err(|_| std::io::Error::other("poisoned"))?
                        .recv();
                    let Ok((f, staged, to)) = next else {
                        return Ok(());
                    };
                    f.sync_all()?;
                    drop(f);
                    rename_no_replace(&staged, &to)?;
                }
            })
        })
        .collect();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    let mut dirs = std::collections::BTreeSet::new();
    for n in 0u64.. {
        let len = inp.read_u32_le().await? as usize;
        if len == 0 {
            break;
        }
        if len > 4096 {
            bail!("a path of {len} bytes");
        }
        let mut rel = vec![0u8; len];
        inp.read_exact(&mut rel).await?;
        let rel = PathBuf::from(std::ffi::OsStr::from_bytes(&rel));
        if rel.is_absolute() || rel.components().any(|c| c.as_os_str() == "..") {
            bail!("a path outside the destination: {}", rel.display());
        }
        let mode = inp.read_u32_le().await?;
        let size = inp.read_u64_le().await?;
        let staged = tmp.join(format!("{n}.tmp"));
        let mut f = File::create(&staged)?;
        let mut hasher = hash.then(blake3::Hasher::new);
        let mut left = size;
        while left > 0 {
            let want = CHUNK.min(left as usize);
            let got = inp.read(&mut buf[..want]).await?;
            if got == 0 {
                bail!("the sender stopped inside {}", rel.display());
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&buf[..got]);
            }
            f.write_all(&buf[..got])?;
            left -= got as u64;
            total += got as u64;
        }
        if let Some(h) = hasher {
            std::hint::black_box(h.finalize());
        }
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        let to = dst.join(&rel);
        let parent = to.parent().unwrap_or(dst).to_path_buf();
        if !dirs.contains(&parent) {
            fs::create_dir_all(&parent)?;
            // Every folder made on the way is made durable at the end.
            for d in parent.ancestors().take_while(|d| d.starts_with(dst)) {
                dirs.insert(d.to_path_buf());
            }
        }
        tx.send((f, staged, to))
            .map_err(|_| anyhow::anyhow!("a flushing thread stopped"))?;
    }
    drop(tx);
    for s in syncers {
        s.join()
            .map_err(|_| anyhow::anyhow!("a flushing thread panicked"))?
            .context("cannot make a file durable or put it in place")?;
    }
    dirs.insert(dst.to_path_buf());
    for d in dirs {
        File::open(&d)?.sync_all()?;
    }
    Ok(total)
}

fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    let c =
        |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD resolves them
    // as relative to the working folder, as any path call does.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
