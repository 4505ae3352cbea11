//! The cheapest copy of a tree that keeps the promises a Tandem install
//! makes: each file is written under a temp name in a folder of its own
//! (as the node's state folder), made durable, and only then renamed into
//! place with `RENAME_NOREPLACE` (never over a file that appeared); the
//! renames are made durable at the end (one more `syncfs`). No network, no encryption, no hashing, no
//! index: what is left is what the file system charges for atomic, durable
//! installs. `bench/fresh_fs.sh` times it beside `cp -a` + `sync` in the
//! same run, as the floor under Tandem's small-file rows.
//!
//! ```text
//! cargo run --release -p tandem-node --example install_floor -- SRC DST TMP [BATCH]
//! ```
//!
//! BATCH files are written, then one `syncfs` makes them durable, then they
//! are renamed into place (default: every file in one batch, the fewest
//! barriers; the node uses batches of 128 so files appear as they come).

use std::ffi::CString;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        bail!("usage: install_floor SRC DST TMP [BATCH]");
    }
    let (src, dst, tmp) = (
        PathBuf::from(&args[1]),
        PathBuf::from(&args[2]),
        PathBuf::from(&args[3]),
    );
    let batch: usize = match args.get(4) {
        Some(b) => b.parse().context("BATCH is a number of files")?,
        None => usize::MAX,
    };
    fs::create_dir_all(&tmp).with_context(|| format!("cannot make {}", tmp.display()))?;
    let mut pending: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut n = 0u64;
    for e in walkdir::WalkDir::new(&src).sort_by_file_name() {
        let e = e?;
        let rel = e.path().strip_prefix(&src)?;
        let to = dst.join(rel);
        let meta = e.metadata()?;
        if meta.is_dir() {
            fs::create_dir_all(&to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let data = fs::read(e.path())?;
        let part = tmp.join(format!("{n}.part"));
        n += 1;
        let mut f = File::create(&part)?;
        f.write_all(&data)?;
        f.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        f.set_modified(meta.modified()?)?;
        drop(f);
        pending.push((part, to));
        if pending.len() >= batch {
            install(&tmp, &mut pending)?;
        }
    }
    install(&tmp, &mut pending)?;
    syncfs(&tmp)
}

/// `syncfs(2)` of the file system holding `at`.
fn syncfs(at: &Path) -> anyhow::Result<()> {
    let f = File::open(at)?;
    // SAFETY: a valid open descriptor.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("syncfs");
    }
    Ok(())
}

/// Makes the written temp files durable, then renames each into place.
fn install(tmp: &Path, pending: &mut Vec<(PathBuf, PathBuf)>) -> anyhow::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    syncfs(tmp)?;
    for (from, to) in pending.drain(..) {
        let (a, b) = (
            CString::new(from.as_os_str().as_bytes())?,
            CString::new(to.as_os_str().as_bytes())?,
        );
        // SAFETY: two valid C strings; plain integers otherwise.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot rename into {}", to.display()));
        }
    }
    Ok(())
}
