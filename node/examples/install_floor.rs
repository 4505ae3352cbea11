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
//!
//! With `FLOOR_TMPFILE=1` each file is instead written as an unnamed file in
//! its destination folder (`O_TMPFILE`) and linked into place (`linkat`,
//! which never replaces a name either): no temp folder entry to make and
//! remove, no rename across folders. (The node does not do this yet; this
//! measures what it would save.) It holds a descriptor per file of a batch
//! open: keep BATCH under the open-files limit (`ulimit -n`).

use std::ffi::CString;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
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
    let unnamed = std::env::var_os("FLOOR_TMPFILE").is_some_and(|v| v == "1");
    let mut pending: Vec<(Part, PathBuf)> = Vec::new();
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
        let (mut f, part) = if unnamed {
            let dir = to.parent().context("a file has a folder")?;
            let f = fs::OpenOptions::new()
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_TMPFILE)
                .open(dir)
                .with_context(|| format!("O_TMPFILE in {}", dir.display()))?;
            (f.try_clone()?, Part::Unnamed(f))
        } else {
            let part = tmp.join(format!("{n}.part"));
            n += 1;
            (File::create(&part)?, Part::Named(part))
        };
        f.write_all(&data)?;
        f.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        f.set_modified(meta.modified()?)?;
        drop(f);
        pending.push((part, to));
        if pending.len() >= batch {
            install(&dst, &mut pending)?;
        }
    }
    install(&dst, &mut pending)?;
    syncfs(&dst)
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

/// A file written, not yet in place.
enum Part {
    /// Under a temp name.
    Named(PathBuf),
    /// Unnamed (`O_TMPFILE`), held open.
    Unnamed(File),
}

/// Makes the written temp files durable (a flush of `dst`'s file system:
/// the unnamed files are there, and named ones must be, to be renamed
/// there), then puts each in place.
fn install(dst: &Path, pending: &mut Vec<(Part, PathBuf)>) -> anyhow::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    syncfs(dst)?;
    for (from, to) in pending.drain(..) {
        let b = CString::new(to.as_os_str().as_bytes())?;
        let rc = match from {
            Part::Named(from) => {
                let a = CString::new(from.as_os_str().as_bytes())?;
                // SAFETY: two valid C strings; plain integers otherwise.
                unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_NOREPLACE,
                    )
                }
            }
            Part::Unnamed(f) => {
                let a = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
                // SAFETY: two valid C strings; `f` keeps the descriptor open.
                unsafe {
                    libc::linkat(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::AT_SYMLINK_FOLLOW,
                    )
                }
            }
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot rename into {}", to.display()));
        }
    }
    Ok(())
}
