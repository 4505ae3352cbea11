//! File operations on a node's folder that know exactly what they replaced,
//! even while the node itself writes the same paths.
//!
//! - A write goes to a temp file in the run's scratch folder (same
//!   filesystem, outside every synced tree) and is swapped in with
//!   `renameat2(RENAME_NOREPLACE)`, or `RENAME_EXCHANGE` when something is
//!   there: what comes back out is exactly what the write replaced.
//! - A delete renames the file or folder out to the scratch folder first,
//!   then reads what was moved out.
//! - A file rename reads the file through a descriptor opened before it,
//!   and checks afterwards (by inode) that the file it read is the one that
//!   moved. A folder rename reads the folder before and after: what was
//!   there before (or after) was taken away from the old path, what is
//!   there after was put at the new one.
//! - Appends and truncates happen in place, as an editor or a logger would:
//!   the old content is read through the same descriptor just before, and
//!   the inode is checked after. The node never writes a file in place
//!   (it renames), so the one race left is the node renaming a new version
//!   over the path between our open and our write; it is detected (the
//!   path no longer holds our inode) and then our content is not recorded
//!   as put there (the old content counts as destroyed either way).
//!
//! Every operation returns a line for the op log.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use filetime::FileTime;

use super::record::{Content, Ev, Hash, Record};
use crate::harness::{pattern, walk_tree};

/// How often an operation retries when the node changed the path under it.
const ATTEMPTS: usize = 6;

/// `renameat2(2)` on two paths.
pub fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let f = CString::new(from.as_os_str().as_bytes())?;
    let t = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths, relative to the cwd.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// One operation's view: the node's folder, the scratch folder, the record.
pub struct Ctx<'a> {
    pub root: &'a Path,
    pub scratch: &'a Path,
    pub rec: &'a mut Record,
    pub op: usize,
    pub node: usize,
    pub seed: u64,
}

fn unique(scratch: &Path, what: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    scratch.join(format!("{what}-{}", N.fetch_add(1, Ordering::Relaxed)))
}

fn mtime_ns(m: &fs::Metadata) -> i64 {
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

/// A content unique to this write: a header naming it, then filler.
pub fn content(seed: u64, label: &str, node: usize, path: &str, size: usize) -> Vec<u8> {
    let mut v = format!(
        "tandem-chaos seed={seed} {label} by {} at {path:?}\n",
        super::plan::NAMES[node]
    )
    .into_bytes();
    if v.len() < size {
        let salt = blake3::hash(label.as_bytes()).as_bytes()[0..8]
            .iter()
            .fold(seed, |a, b| a.rotate_left(8) ^ u64::from(*b));
        v.extend(pattern(size - v.len(), salt));
    }
    v
}

impl Ctx<'_> {
    fn full(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn ev(&mut self, path: &str, hash: Option<Hash>, ev: Ev) {
        self.rec.event(self.op, self.node, path, hash, ev);
    }

    fn register(&mut self, label: &str, path: &str, data: &[u8], mtime_ns: i64) -> Hash {
        let h = blake3::hash(data);
        self.rec.contents.entry(h).or_insert_with(|| Content {
            label: label.to_string(),
            op: self.op,
            node: self.node,
            path: path.to_string(),
            mtime_ns,
            size: data.len() as u64,
        });
        h
    }

    /// Creates the missing parent folders of `rel` (recording each).
    fn ensure_parents(&mut self, rel: &str) -> io::Result<()> {
        let comps: Vec<&str> = rel.split('/').collect();
        let mut prefix = String::new();
        for c in &comps[..comps.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
            let full = self.full(&prefix);
            match fs::create_dir(&full) {
                Ok(()) => self.ev(&prefix.clone(), None, Ev::PutDir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if !fs::symlink_metadata(&full)?.is_dir() {
                        return Err(io::Error::other(format!("{prefix:?} is not a folder")));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Swaps the file `tmp` in at `rel`; returns what was there (moved out
    /// to `tmp`'s name, read and removed).
    fn swap_in(&mut self, tmp: &Path, rel: &str) -> io::Result<Option<Vec<u8>>> {
        let target = self.full(rel);
        let mut last = None;
        for _ in 0..ATTEMPTS {
            self.ensure_parents(rel)?;
            match renameat2(tmp, &target, libc::RENAME_NOREPLACE) {
                Ok(()) => return Ok(None),
                Err(e) if errno(&e) == libc::EEXIST => {}
                Err(e) if errno(&e) == libc::ENOENT => {
                    last = Some(e); // a parent went away meanwhile
                    continue;
                }
                Err(e) => return Err(e),
            }
            match renameat2(tmp, &target, libc::RENAME_EXCHANGE) {
                Ok(()) => {
                    if fs::symlink_metadata(tmp)?.is_dir() {
                        renameat2(tmp, &target, libc::RENAME_EXCHANGE)?;
                        return Err(io::Error::other(format!("{rel:?} is a folder here")));
                    }
                    let old = fs::read(tmp)?;
                    fs::remove_file(tmp)?;
                    return Ok(Some(old));
                }
                Err(e) if errno(&e) == libc::ENOENT => last = Some(e), // gone meanwhile
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("the path kept changing")))
    }

    /// Creates or replaces the file `rel` with a new content.
    pub fn write(
        &mut self,
        label: &str,
        rel: &str,
        size: usize,
        mtime: Option<FileTime>,
    ) -> String {
        let data = content(self.seed, label, self.node, rel, size);
        let tmp = unique(self.scratch, "write");
        let prepared = fs::write(&tmp, &data).and_then(|()| {
            if let Some(t) = mtime {
                filetime::set_file_mtime(&tmp, t)?;
            }
            fs::symlink_metadata(&tmp)
        });
        let meta = match prepared {
            Ok(m) => m,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return format!("cannot prepare the file: {e}");
            }
        };
        match self.swap_in(&tmp, rel) {
            Ok(old) => {
                let new = self.register(label, rel, &data, mtime_ns(&meta));
                let what = match old {
                    None => "created".to_string(),
                    Some(old) => {
                        let h = self.rec.seen(self.op, self.node, rel, &old);
                        self.ev(rel, Some(h), Ev::Removed { destroyed: true });
                        format!("replaced {}", self.rec.label(&h))
                    }
                };
                self.ev(rel, Some(new), Ev::Put);
                format!("{label}: {what}")
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                format!("{label}: not written: {e}")
            }
        }
    }

    /// Opens `rel` for an in-place change, with its content; `None` when
    /// it is not here.
    fn open_in_place(&mut self, rel: &str) -> io::Result<Option<(fs::File, u64, Vec<u8>)>> {
        let full = self.full(rel);
        for _ in 0..ATTEMPTS {
            let mut f = match OpenOptions::new().read(true).write(true).open(&full) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let ino = f.metadata()?.ino();
            let mut old = Vec::new();
            f.read_to_end(&mut old)?;
            if fs::symlink_metadata(&full).is_ok_and(|m| m.ino() == ino) {
                return Ok(Some((f, ino, old)));
            }
        }
        Err(io::Error::other("the node kept replacing the file"))
    }

    /// Records an in-place change of `rel` from `old` to `new` through the
    /// inode `ino`.
    fn changed_in_place(
        &mut self,
        label: &str,
        rel: &str,
        ino: u64,
        f: &fs::File,
        old: &[u8],
        new: &[u8],
    ) -> String {
        let h_old = self.rec.seen(self.op, self.node, rel, old);
        self.ev(rel, Some(h_old), Ev::Removed { destroyed: true });
        let still_ours = fs::symlink_metadata(self.full(rel)).is_ok_and(|m| m.ino() == ino);
        match f.metadata() {
            Ok(m) if still_ours => {
                let h = self.register(label, rel, new, mtime_ns(&m));
                self.ev(rel, Some(h), Ev::Put);
                format!("{label}: was {}", self.rec.label(&h_old))
            }
            _ => format!(
                "{label}: raced: the node replaced {rel:?} during the change; ours not recorded (was {})",
                self.rec.label(&h_old)
            ),
        }
    }

    /// Appends `size` bytes in place (creates the file if it is not here).
    pub fn append(&mut self, label: &str, rel: &str, size: usize) -> String {
        let (mut f, ino, old) = match self.open_in_place(rel) {
            Ok(Some(x)) => x,
            Ok(None) => return format!("not here; {}", self.write(label, rel, size, None)),
            Err(e) => return format!("{label}: cannot open: {e}"),
        };
        let mut suffix = format!(
            "\n+ tandem-chaos seed={} {label} appended by {}\n",
            self.seed,
            super::plan::NAMES[self.node]
        )
        .into_bytes();
        suffix.extend(pattern(size, self.op as u64 ^ self.seed));
        if let Err(e) = f.write_all(&suffix) {
            return format!("{label}: append failed: {e}");
        }
        let mut new = old.clone();
        new.extend_from_slice(&suffix);
        self.changed_in_place(label, rel, ino, &f, &old, &new)
    }

    /// Truncates in place to about `permille`/1000 of the size, to a
    /// length whose prefix is a content never seen before.
    pub fn truncate(&mut self, label: &str, rel: &str, permille: u64) -> String {
        let (f, ino, old) = match self.open_in_place(rel) {
            Ok(Some(x)) => x,
            Ok(None) => return "not here; nothing done".into(),
            Err(e) => return format!("{label}: cannot open: {e}"),
        };
        let mut len = (old.len() as u64 * permille / 1000).max(1) as usize;
        while len > 0 && self.rec.contents.contains_key(&blake3::hash(&old[..len])) {
            len -= 1;
        }
        if len == 0 || len >= old.len() {
            return format!("{} B: too short to truncate; nothing done", old.len());
        }
        if let Err(e) = f.set_len(len as u64) {
            return format!("{label}: truncate failed: {e}");
        }
        let line = self.changed_in_place(label, rel, ino, &f, &old, &old[..len]);
        format!("{line}; {} B -> {len} B", old.len())
    }

    /// Records what `moved` (a file or folder renamed out of the tree, now
    /// in the scratch folder) held as taken away from `rel`, then removes it.
    fn moved_out(&mut self, rel: &str, moved: &Path) -> String {
        let meta = match fs::symlink_metadata(moved) {
            Ok(m) => m,
            Err(e) => return format!("cannot look at what was moved out: {e}"),
        };
        let mut labels = Vec::new();
        if meta.is_dir() {
            self.ev(rel, None, Ev::RemovedDir);
            let mut found = Vec::new();
            walk_tree(moved, &mut |r, full, m| {
                if m.is_dir() {
                    found.push((r.to_string(), None));
                } else if m.is_file() {
                    found.push((r.to_string(), Some(fs::read(full))));
                }
            });
            for (r, data) in found {
                let path = format!("{rel}/{r}");
                match data {
                    None => self.ev(&path, None, Ev::RemovedDir),
                    Some(Ok(d)) => {
                        let h = self.rec.seen(self.op, self.node, &path, &d);
                        self.ev(&path, Some(h), Ev::Removed { destroyed: true });
                        labels.push(self.rec.label(&h));
                    }
                    Some(Err(e)) => labels.push(format!("unreadable {r:?}: {e}")),
                }
            }
            let _ = fs::remove_dir_all(moved);
            format!("folder with [{}]", labels.join(", "))
        } else {
            let r = match fs::read(moved) {
                Ok(d) => {
                    let h = self.rec.seen(self.op, self.node, rel, &d);
                    self.ev(rel, Some(h), Ev::Removed { destroyed: true });
                    self.rec.label(&h)
                }
                Err(e) => format!("unreadable: {e}"),
            };
            let _ = fs::remove_file(moved);
            r
        }
    }

    /// Deletes the file or folder `rel` (renamed out first).
    pub fn delete(&mut self, rel: &str) -> String {
        let out = unique(self.scratch, "deleted");
        match renameat2(&self.full(rel), &out, libc::RENAME_NOREPLACE) {
            Ok(()) => format!("deleted {}", self.moved_out(rel, &out)),
            Err(e) if errno(&e) == libc::ENOENT => "not here; nothing done".into(),
            Err(e) => format!("cannot delete: {e}"),
        }
    }

    /// Moves whatever is at `to` out of the way (recorded as deleted).
    fn clear(&mut self, to: &str) -> Option<String> {
        fs::symlink_metadata(self.full(to))
            .is_ok()
            .then(|| format!("first {}; ", self.delete(to)))
    }

    /// Renames `from` to `to` (either a file or a folder), deleting what is
    /// at `to` first; `Ok(None)` when `from` is not here.
    fn rename_path(&mut self, from: &str, to: &str) -> io::Result<Option<String>> {
        let mut note = String::new();
        for _ in 0..ATTEMPTS {
            if let Some(n) = self.clear(to) {
                note.push_str(&n);
            }
            self.ensure_parents(to)?;
            match renameat2(&self.full(from), &self.full(to), libc::RENAME_NOREPLACE) {
                Ok(()) => return Ok(Some(note)),
                Err(e) if errno(&e) == libc::EEXIST => {} // it came back: clear again
                Err(e) if errno(&e) == libc::ENOENT => {
                    if fs::symlink_metadata(self.full(from)).is_err() {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("the paths kept changing"))
    }

    /// Renames or moves the file `from` to `to`.
    pub fn rename(&mut self, from: &str, to: &str) -> String {
        let (mut f, ino) = match fs::File::open(self.full(from)) {
            Ok(f) => match f.metadata() {
                Ok(m) => (f, m.ino()),
                Err(e) => return format!("cannot stat: {e}"),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return "not here; nothing done".into();
            }
            Err(e) => return format!("cannot open: {e}"),
        };
        let mut data = Vec::new();
        if let Err(e) = f.read_to_end(&mut data) {
            return format!("cannot read: {e}");
        }
        let note = match self.rename_path(from, to) {
            Ok(Some(n)) => n,
            Ok(None) => return "vanished meanwhile; nothing done".into(),
            Err(e) => return format!("cannot rename: {e}"),
        };
        let h = self.rec.seen(self.op, self.node, from, &data);
        self.ev(from, Some(h), Ev::Removed { destroyed: false });
        let moved = fs::symlink_metadata(self.full(to)).is_ok_and(|m| m.ino() == ino);
        if moved {
            self.ev(to, Some(h), Ev::Put);
            return format!("{note}moved {}", self.rec.label(&h));
        }
        // The node replaced `from` between our read and the rename: what
        // moved is what is at `to` now (read at once).
        match fs::read(self.full(to)) {
            Ok(d) => {
                let h2 = self.rec.seen(self.op, self.node, to, &d);
                // It left `from` too (moved, not destroyed).
                self.ev(from, Some(h2), Ev::Removed { destroyed: false });
                self.ev(to, Some(h2), Ev::Put);
                format!(
                    "{note}raced: the node replaced {from:?} just before; moved {} (read {})",
                    self.rec.label(&h2),
                    self.rec.label(&h)
                )
            }
            Err(e) => format!("{note}raced: the node replaced {from:?} just before; {to:?}: {e}"),
        }
    }

    /// The files (with their content) and folders under `dir`, by
    /// relative path.
    fn snapshot(dir: &Path) -> Vec<(String, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        walk_tree(dir, &mut |r, full, m| {
            if m.is_dir() {
                out.push((r.to_string(), None));
            } else if m.is_file()
                && let Ok(d) = fs::read(full)
            {
                out.push((r.to_string(), Some(d)));
            }
        });
        out
    }

    /// Renames or moves the folder `from` to `to`.
    pub fn rename_dir(&mut self, from: &str, to: &str) -> String {
        match fs::symlink_metadata(self.full(from)) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return "not a folder here; nothing done".into(),
            Err(_) => return "not here; nothing done".into(),
        }
        let before = Self::snapshot(&self.full(from));
        let note = match self.rename_path(from, to) {
            Ok(Some(n)) => n,
            Ok(None) => return "vanished meanwhile; nothing done".into(),
            Err(e) => return format!("cannot rename: {e}"),
        };
        let after = Self::snapshot(&self.full(to));
        // Taken away from `from`: what was there before, and what the
        // node may have put there just before the rename.
        self.ev(from, None, Ev::RemovedDir);
        for (r, data) in before.iter().chain(after.iter()) {
            let path = format!("{from}/{r}");
            match data {
                None => self.ev(&path, None, Ev::RemovedDir),
                Some(d) => {
                    let h = self.rec.seen(self.op, self.node, &path, d);
                    self.ev(&path, Some(h), Ev::Removed { destroyed: false });
                }
            }
        }
        // Put at `to`: what the rename moved there (a file the node had
        // just replaced inside is read as it is now).
        self.ev(to, None, Ev::PutDir);
        let mut labels = Vec::new();
        for (r, data) in &after {
            let path = format!("{to}/{r}");
            match data {
                None => self.ev(&path, None, Ev::PutDir),
                Some(d) => {
                    let h = blake3::hash(d);
                    self.ev(&path, Some(h), Ev::Put);
                    labels.push(self.rec.label(&h));
                }
            }
        }
        format!("{note}moved folder with [{}]", labels.join(", "))
    }

    /// Creates the folder `rel` (and missing parents).
    pub fn mkdir(&mut self, rel: &str) -> String {
        if let Err(e) = self.ensure_parents(rel) {
            return format!("cannot create parents: {e}");
        }
        match fs::create_dir(self.full(rel)) {
            Ok(()) => {
                self.ev(rel, None, Ev::PutDir);
                "created".into()
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => "already here".into(),
            Err(e) => format!("cannot create: {e}"),
        }
    }
}
