//! Fetch and put for the one-shot subcommands: files are written to a temp
//! name in the destination directory, hash-checked, fsynced and renamed, so
//! a partial file never appears under the real name.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tandem_common::proto::{ApiError, ClientRequest, ClientResponse, ListedFile};
use tandem_common::{ContentHash, RelPath};

use crate::client::{Client, ClientError};

/// Upload pieces.
const PUT_CHUNK: usize = 1024 * 1024;

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
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// Fetches `path` into the directory `to`, retrying when the file changes
/// while it is being sent.
pub async fn fetch(
    c: &Client,
    path: &RelPath,
    to: &Path,
    from: Option<String>,
) -> anyhow::Result<Fetched> {
    let mut last = None;
    for _ in 0..3 {
        match fetch_once(c, path, to, from.clone()).await {
            Err(e) if e.to_string().contains("try again") => last = Some(e),
            r => return r,
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("cannot fetch {path}")))
}

async fn fetch_once(
    c: &Client,
    path: &RelPath,
    to: &Path,
    from: Option<String>,
) -> anyhow::Result<Fetched> {
    let meta = std::fs::metadata(to)
        .with_context(|| format!("cannot use {} as the destination", to.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", to.display());
    }
    let mut answers = c.start(ClientRequest::Fetch {
        path: path.clone(),
        from,
    })?;
    let (file, source) = match answers.next().await {
        Ok(ClientResponse::FetchStart { file, from }) => (file, from),
        Ok(other) => bail!("unexpected answer: {other:?}"),
        Err(ClientError::Api(ApiError::Other(m))) if m.ends_with("does not exist") => {
            bail!("{path} does not exist")
        }
        Err(e) => return Err(e.into()),
    };
    let dest = to.join(path.file_name());
    let tmp = to.join(format!(
        ".{}.tandem-part-{}",
        path.file_name(),
        std::process::id()
    ));
    let mut out =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let cleanup = |e: anyhow::Error| {
        let _ = std::fs::remove_file(&tmp);
        e
    };
    let pb = progress(file.size, path.as_str());
    let mut hasher = blake3::Hasher::new();
    loop {
        match answers.next().await {
            Ok(ClientResponse::Chunk { data, last, .. }) => {
                hasher.update(&data);
                out.write_all(&data)
                    .with_context(|| format!("cannot write {}", tmp.display()))
                    .map_err(cleanup)?;
                pb.inc(data.len() as u64);
                if last {
                    break;
                }
            }
            Ok(other) => return Err(cleanup(anyhow::anyhow!("unexpected answer: {other:?}"))),
            Err(e) => return Err(cleanup(e.into())),
        }
    }
    pb.finish_and_clear();
    if ContentHash(*hasher.finalize().as_bytes()) != file.hash {
        return Err(cleanup(anyhow::anyhow!(
            "{path} arrived damaged (hash mismatch); nothing was saved"
        )));
    }
    out.sync_all().map_err(|e| cleanup(e.into()))?;
    drop(out);
    let t = filetime::FileTime::from_unix_time(
        file.mtime_ns.div_euclid(1_000_000_000),
        file.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_file_mtime(&tmp, t).map_err(|e| cleanup(e.into()))?;
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("cannot save {}", dest.display()))
        .map_err(cleanup)?;
    Ok(Fetched {
        file,
        dest,
        from: source,
    })
}

/// Uploads `local` as `path`.
pub async fn put(c: &Client, local: &Path, path: &RelPath) -> anyhow::Result<u64> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(local).with_context(|| format!("cannot read {}", local.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", local.display());
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
