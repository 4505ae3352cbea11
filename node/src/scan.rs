//! Looking at the disk: stat a path, walk a tree, hash a file.
//!
//! The state folder is never entered. Names that are not UTF-8 (and other
//! names `RelPath` refuses) are skipped with a warning. Symlinks are synced
//! as links ([`Seen::Link`]: their target text, read with `readlink`, never
//! followed). Sockets and other special files are not synced: they are
//! [`Seen::Other`], which the index treats as absent but which nothing is
//! ever written through. Files are opened with `O_NOFOLLOW`
//! ([`open_nofollow`]), so a file swapped for a link between a stat and an
//! open is never read through.
//!
//! A folder that cannot be read is reported, never taken as empty: what
//! was under it is not known, so nothing under it may become a delete.

use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tandem_common::RelPath;
use tandem_common::hashing::{Hashed, hash_reader};

use crate::ignores::Ignores;
use crate::index::LocalStat;

/// Prefix of the temp files written beside a target when the state folder
/// is on another filesystem; never indexed.
pub const TEMP_PREFIX: &str = ".tandem-tmp-";

/// True for names that are our own temp files.
pub fn is_temp_name(rel: &RelPath) -> bool {
    rel.file_name().starts_with(TEMP_PREFIX)
}

/// What is at a path on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Nothing there.
    Absent,
    /// Something we do not sync: a socket, a device, a fifo. For the
    /// index it is as good as absent; nothing is written through it.
    Other,
    /// A symbolic link (its size is the target's length, its mode 0).
    Link(LocalStat),
    /// A directory with these permission bits.
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A regular file.
    File(LocalStat),
}

/// Converts metadata to what the index compares (a link's mode is 0: its
/// permission bits mean nothing).
pub fn local_stat(m: &Metadata) -> LocalStat {
    let mode = if m.file_type().is_symlink() {
        0
    } else {
        m.mode() & tandem_common::model::SYNCED_MODE_BITS
    };
    LocalStat {
        inode: m.ino(),
        size: m.len(),
        mtime_ns: mtime_ns(m),
        mode,
    }
}

/// The mtime of `m` in nanoseconds since the epoch; saturating: a time
/// past 2262 (set by hand) must not overflow.
pub fn mtime_ns(m: &Metadata) -> i64 {
    m.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec())
}

fn seen_from(m: &Metadata) -> Seen {
    let ft = m.file_type();
    if ft.is_dir() {
        Seen::Dir {
            mode: m.mode() & tandem_common::model::SYNCED_MODE_BITS,
        }
    } else if ft.is_file() {
        Seen::File(local_stat(m))
    } else if ft.is_symlink() {
        Seen::Link(local_stat(m))
    } else {
        Seen::Other
    }
}

/// True when every directory between `root` and `rel` that exists is a
/// real directory (not a symlink, not a file), so nothing is read or
/// written outside the tree through a link.
pub fn parents_are_dirs(root: &Path, rel: &RelPath) -> io::Result<bool> {
    let mut cur = root.to_path_buf();
    let parts: Vec<&str> = rel.as_str().split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        cur.push(part);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Stats `rel` under `root` without following symlinks anywhere: a path
/// whose parent is a symlink (or a file) is absent, for our purposes.
pub fn stat_rel(root: &Path, rel: &RelPath) -> io::Result<Seen> {
    if !parents_are_dirs(root, rel)? {
        return Ok(Seen::Absent);
    }
    stat(&rel.to_disk(root))
}

/// Stats `full` without following symlinks.
pub fn stat(full: &Path) -> io::Result<Seen> {
    match fs::symlink_metadata(full) {
        Ok(m) => Ok(seen_from(&m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Seen::Absent),
        // A path under something that became a file: gone, for our purposes.
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(Seen::Absent),
        Err(e) => Err(e),
    }
}

/// What a walk saw.
#[derive(Debug, Default)]
pub struct Walk {
    /// The relative paths found, end to end: one allocation for all (a
    /// string each would pin the memory between the long-lived allocations
    /// made meanwhile, such as the watches of a start-up walk).
    names: String,
    /// Per path found: where its text ends in `names`, and what it is.
    found: Vec<(usize, Seen)>,
    /// Paths that could not be read (a folder's listing, or an entry's
    /// metadata), with why. What is under them is unknown, not absent.
    pub unreadable: Vec<(PathBuf, io::Error)>,
    /// Which of `unreadable` are folders that could not be listed.
    unlisted: Vec<usize>,
}

impl Walk {
    fn push(&mut self, rel: &str, seen: Seen) {
        self.names.push_str(rel);
        self.found.push((self.names.len(), seen));
    }

    fn unlisted_folder(&mut self, path: PathBuf, e: io::Error) {
        self.unlisted.push(self.unreadable.len());
        self.unreadable.push((path, e));
    }

    /// The folders that could not be listed (or listed to the end), with why.
    pub fn unlisted(&self) -> impl Iterator<Item = &(PathBuf, io::Error)> + '_ {
        self.unlisted.iter().map(|&i| &self.unreadable[i])
    }

    /// Nothing was found.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Every path found (text a [`RelPath`] accepts) with what it is, a
    /// folder before what is in it.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Seen)> + '_ {
        let mut start = 0;
        self.found.iter().map(move |&(end, seen)| {
            let p = &self.names[start..end];
            start = end;
            (p, seen)
        })
    }

    /// True when `p` (under `root`) is, or is inside, a path that could not
    /// be read.
    pub fn unknown(&self, root: &Path, p: &RelPath) -> bool {
        let full = p.to_disk(root);
        self.unreadable.iter().any(|(u, _)| full.starts_with(u))
    }
}

/// Walks the tree under `dir` (inclusive of `dir`'s children, not `dir`
/// itself), skipping `skip` (the state folder), what `ignores` excludes
/// (an ignored folder is not entered) and names we cannot sync. A folder
/// is listed before what is in it is (parents come first in `seen`).
///
/// Each entry is looked at relative to its open folder (`fstatat`), not by
/// its full path, and its relative path is its folder's plus its name: at
/// 100,000 files the path lookups and conversions were a third of a walk.
pub fn walk(root: &Path, dir: &Path, skip: &Path, ignores: &Ignores) -> Walk {
    walk_with(root, dir, skip, ignores, |_| {})
}

/// [`walk`], calling `before_listing` with each folder (`dir` first) just
/// before it is listed: a watch added there sees whatever changes in the
/// folder after the listing.
pub fn walk_with(
    root: &Path,
    dir: &Path,
    skip: &Path,
    ignores: &Ignores,
    mut before_listing: impl FnMut(&Path),
) -> Walk {
    let mut out = Walk::default();
    let top = if dir == root {
        String::new()
    } else {
        match RelPath::from_disk(root, dir) {
            Ok(r) => r.as_str().to_string(),
            Err(e) => {
                tracing::warn!("skipping {}: {e}", dir.display());
                return out;
            }
        }
    };
    // Folders still to list: (full path, relative path; "" for the root).
    let mut todo: Vec<(PathBuf, String)> = vec![(dir.to_path_buf(), top)];
    while let Some((full, rel)) = todo.pop() {
        before_listing(&full);
        let list = match fs::read_dir(&full) {
            Ok(l) => l,
            // Vanished while walking: the watcher or the next scan sees
            // the final state. Anything else is not knowing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.unlisted_folder(full, e);
                continue;
            }
        };
        let mut sub = Vec::new();
        let mut child = String::new();
        for item in list {
            let entry = match item {
                Ok(e) => e,
                Err(e) => {
                    out.unlisted_folder(full.clone(), e);
                    break;
                }
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                tracing::warn!("skipping {}: the name is not UTF-8", entry.path().display());
                continue;
            };
            // Our temp files are not indexed (a folder of that name is
            // still entered, as hints look only at the last name).
            let temp = name.starts_with(TEMP_PREFIX);
            child.clear();
            if !rel.is_empty() {
                child.push_str(&rel);
                child.push('/');
            }
            child.push_str(name);
            if let Err(e) = RelPath::check(&child) {
                tracing::warn!("skipping {}: {e}", entry.path().display());
                continue;
            }
            // The kind as the listing says (no stat): enough for the
            // ignore patterns and the state folder...
            let listed_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let excluded = |is_dir: bool| {
                (is_dir && entry.path() == skip)
                    || (!ignores.is_empty()
                        && RelPath::new(child.as_str())
                            .is_ok_and(|r| ignores.is_ignored(&r, is_dir)))
            };
            if excluded(listed_dir) {
                continue;
            }
            let seen = match entry.metadata() {
                Ok(m) => seen_from(&m),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    out.unreadable.push((entry.path(), e));
                    continue;
                }
            };
            let is_dir = matches!(seen, Seen::Dir { .. });
            // ...unless the stat says otherwise (the listing could not
            // tell, or a folder took a file's place): checked again.
            if is_dir && !listed_dir && excluded(true) {
                continue;
            }
            if is_dir {
                sub.push((entry.path(), child.clone()));
            }
            if !temp {
                out.push(&child, seen);
            }
        }
        // Popped in listing order: the tree comes out depth first.
        todo.extend(sub.into_iter().rev());
    }
    out
}

/// The paths under `root` that `ignores` excludes, by path: an ignored
/// folder once (what is in it is not looked at), at most `limit` of them,
/// and how many more there are. `skip` (the state folder) is not entered.
pub fn ignored(
    root: &Path,
    skip: &Path,
    ignores: &Ignores,
    limit: usize,
) -> (Vec<tandem_common::proto::IgnoredPath>, u64) {
    let mut found = Vec::new();
    let mut more = 0u64;
    if ignores.is_empty() {
        return (found, 0);
    }
    let walk = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            if e.path() == skip {
                return false;
            }
            let Ok(rel) = RelPath::from_disk(root, e.path()) else {
                return false;
            };
            let dir = e.file_type().is_dir();
            match ignores.matched(&rel, dir) {
                None => true,
                Some(rule) => {
                    if found.len() < limit {
                        found.push(tandem_common::proto::IgnoredPath {
                            path: rel,
                            dir,
                            rule,
                        });
                    } else {
                        more += 1;
                    }
                    false
                }
            }
        });
    // Walking is all that is needed: the filter records what it skips.
    // Unreadable folders are simply not listed from.
    for _ in walk {}
    (found, more)
}

/// Why a file could not be hashed into a stable version.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// It changed while being read; try again once it settles.
    #[error("changed while being read")]
    Unstable,
    /// It is no longer a regular file (or gone).
    #[error("no longer a regular file")]
    Gone,
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Opens `full` for reading without following a link at its last
/// component (a link there fails with `ELOOP`; parents are checked by the
/// callers, see [`parents_are_dirs`]).
pub fn open_nofollow(full: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(full)
}

/// True when an open failed because the path is a symbolic link.
pub fn is_link_error(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

/// Reads the target of the link at `full`. A target that is not UTF-8 or
/// not one a peer would accept is an error (`InvalidData`).
pub fn read_link(full: &Path) -> io::Result<String> {
    let t = fs::read_link(full)?;
    let t = t.into_os_string().into_string().map_err(|t| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("its target {t:?} is not valid UTF-8"),
        )
    })?;
    tandem_common::model::check_link_target(&t)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(t)
}

/// Hashes the file at `full`, and checks that it did not change meanwhile.
/// Returns the stat the hash belongs to.
pub fn hash_file(full: &Path) -> Result<(LocalStat, Hashed), HashError> {
    let f = match open_nofollow(full) {
        Ok(f) => f,
        // Became a link (or went) since it was looked at: look again.
        Err(e) if e.kind() == io::ErrorKind::NotFound || is_link_error(&e) => {
            return Err(HashError::Gone);
        }
        Err(e) => return Err(e.into()),
    };
    let before = f.metadata()?;
    if !before.file_type().is_file() {
        return Err(HashError::Gone);
    }
    let hashed = if before.len() >= HASH_IN_TWO_MIN {
        match hash_in_two(&f, before.len())? {
            Some(h) => h,
            None => return Err(HashError::Unstable),
        }
    } else {
        hash_reader(&f)?
    };
    let after = f.metadata()?;
    let (b, a) = (local_stat(&before), local_stat(&after));
    if a != b || hashed.size != a.size {
        return Err(HashError::Unstable);
    }
    Ok((a, hashed))
}

/// Files at least this large are hashed on two threads (see
/// [`hash_in_two`]); below it a thread costs more than it saves, and a
/// scan already hashes many files at once.
const HASH_IN_TWO_MIN: u64 = 16 << 20;

/// Hashes `f` on two threads at once: the content splits in two parts at
/// BLAKE3's left subtree (see [`tandem_common::hashing::split_point`]), and
/// each thread reads its part once for its block hashes, from which the
/// whole hash is made, so both always describe the same bytes. A
/// file changed in place after hashing (say 4 KiB of 256 MiB) is read
/// again in full to find the change; this halves that wait. The helper
/// reads through a descriptor of its own (reopened through `/proc`), so
/// the two reads do not share one readahead. `None` when the parts did
/// not have the lengths `len` gives them (the file changed meanwhile).
/// Falls back to one thread when no thread can be started.
fn hash_in_two(f: &File, len: u64) -> io::Result<Option<Hashed>> {
    use std::io::Read;
    use tandem_common::hashing::{hash_part, join_parts, split_point};
    let Some(at) = split_point(len) else {
        return hash_reader(ReadAt { f, at: 0 }).map(Some);
    };
    let own = own_descriptor(f);
    let right_f = own.as_ref().unwrap_or(f);
    std::thread::scope(|s| {
        let helper = std::thread::Builder::new()
            .name("tandem-hash".into())
            // Bounded: a part that starts at `at` may hold at most `at`
            // bytes (BLAKE3's tree; blake3 asserts it), and a file that
            // grows meanwhile is caught by the caller's stat comparison.
            .spawn_scoped(s, || {
                hash_part(ReadAt { f: right_f, at }.take(len - at), at)
            });
        let helper = match helper {
            Ok(h) => h,
            Err(_) => return hash_reader(ReadAt { f, at: 0 }).map(Some),
        };
        let left = hash_part(ReadAt { f, at: 0 }.take(at), 0);
        let right = helper
            .join()
            .map_err(|_| io::Error::other("the hashing thread panicked"))?;
        Ok(match (left?, right?) {
            (Some(l), Some(r)) if l.size == at && r.size == len - at => Some(join_parts(l, r)),
            _ => None,
        })
    })
}

/// Another open file description of the file `f` is open on (the same
/// inode, whatever its name is now), or `None` where `/proc` cannot give
/// one.
fn own_descriptor(f: &File) -> Option<File> {
    use std::os::unix::io::AsRawFd;
    let again = File::open(format!("/proc/self/fd/{}", f.as_raw_fd())).ok()?;
    let same = |m: &Metadata| (m.dev(), m.ino());
    (same(&again.metadata().ok()?) == same(&f.metadata().ok()?)).then_some(again)
}

/// Reads a file from its own offset (`pread`), so two readers of one
/// descriptor do not move each other's place.
struct ReadAt<'a> {
    f: &'a File,
    at: u64,
}

impl io::Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.f.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_file_hashed_on_two_threads_has_the_one_thread_hashes() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("big");
        let len = HASH_IN_TWO_MIN as usize + 3 * 128 * 1024 + 5;
        let data: Vec<u8> = (0..len)
            .map(|i| (i % 251) as u8 ^ (i >> 17) as u8)
            .collect();
        fs::write(&p, &data).unwrap();
        let (st, h) = hash_file(&p).unwrap();
        assert_eq!(st.size, len as u64);
        assert_eq!(h, hash_reader(&data[..]).unwrap());
        assert_eq!(h.hash, tandem_common::ContentHash::of(&data));
    }

    #[test]
    fn a_file_that_grew_while_hashed_in_two_is_hashed_as_long_as_it_was() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("growing");
        // A power of two: the right part may hold as many bytes as the
        // left, and one more would break BLAKE3's tree.
        let len = 2 * HASH_IN_TWO_MIN as usize;
        let data: Vec<u8> = (0..len + 1).map(|i| (i % 241) as u8).collect();
        fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        let h = hash_in_two(&f, len as u64)
            .unwrap()
            .expect("both parts read");
        assert_eq!(h, hash_reader(&data[..len]).unwrap());
        // Through hash_file the length seen before reading is the file's.
        assert_eq!(hash_file(&p).unwrap().1, hash_reader(&data[..]).unwrap());
    }

    #[test]
    fn walk_skips_state_dir_and_bad_names() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join(".tandem/tmp")).unwrap();
        fs::write(root.join(".tandem/index.db"), b"x").unwrap();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/f"), b"hello").unwrap();
        std::os::unix::fs::symlink("d/f", root.join("link")).unwrap();
        use std::os::unix::ffi::OsStrExt;
        fs::write(root.join(std::ffi::OsStr::from_bytes(b"bad\xff")), b"x").unwrap();
        let mut got: Vec<_> = walk(root, root, &root.join(".tandem"), &Ignores::default())
            .iter()
            .map(|(p, s)| {
                (
                    p.to_string(),
                    matches!(s, Seen::File(_)),
                    matches!(s, Seen::Dir { .. }),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("d".into(), false, true),
                ("d/f".into(), true, false),
                ("link".into(), false, false),
            ]
        );
        let (st, h) = hash_file(&root.join("d/f")).unwrap();
        assert_eq!((st.size, h.size), (5, 5));
        assert!(matches!(
            hash_file(&root.join("nope")),
            Err(HashError::Gone)
        ));
        assert_eq!(stat(&root.join("d/f/x")).unwrap(), Seen::Absent);
    }

    #[test]
    fn walk_lists_folders_before_their_content_and_honours_ignores() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for d in ["a/b/c", "a/skip/deep", "z", "tgt"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["a/1", "a/b/2", "a/b/c/3", "a/skip/deep/4", "z/x.log", "z/5"] {
            fs::write(root.join(f), b"x").unwrap();
        }
        fs::write(root.join(format!("a/{TEMP_PREFIX}part")), b"x").unwrap();
        // A folder named like a temp file is not indexed, what is in it is
        // (as the watcher's hints see it).
        fs::create_dir(root.join(format!("z/{TEMP_PREFIX}dir"))).unwrap();
        fs::write(root.join(format!("z/{TEMP_PREFIX}dir/7")), b"x").unwrap();
        // A link to a folder is a link: never entered.
        std::os::unix::fs::symlink("tgt", root.join("a/to-tgt")).unwrap();
        fs::write(root.join("tgt/6"), b"x").unwrap();
        let ignores = Ignores::new(Some("skip/\n*.log\n"), &[]);
        let walked = walk(root, root, &root.join(".tandem"), &ignores);
        assert!(walked.unreadable.is_empty(), "{:?}", walked.unreadable);
        let got: Vec<String> = walked.iter().map(|(p, _)| p.to_string()).collect();
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "a".to_string(),
                "a/1".into(),
                "a/b".into(),
                "a/b/2".into(),
                "a/b/c".into(),
                "a/b/c/3".into(),
                "a/to-tgt".into(),
                "tgt".into(),
                "tgt/6".into(),
                "z".into(),
                format!("z/{TEMP_PREFIX}dir/7"),
                "z/5".into(),
            ]
        );
        for (i, p) in got.iter().enumerate() {
            if let Some((parent, _)) = p.rsplit_once('/')
                && !parent.contains(TEMP_PREFIX)
            {
                let at = got.iter().position(|q| q == parent).expect("parent listed");
                assert!(at < i, "{parent} comes after {p}: {got:?}");
            }
        }
        assert!(matches!(
            walked.iter().find(|(p, _)| *p == "a/to-tgt"),
            Some((_, Seen::Link(_)))
        ));
        // A walk of one folder names paths from the root.
        let sub = walk(root, &root.join("a/b"), &root.join(".tandem"), &ignores);
        let mut got: Vec<String> = sub.iter().map(|(p, _)| p.to_string()).collect();
        got.sort();
        assert_eq!(got, ["a/b/2", "a/b/c", "a/b/c/3"]);
        // A folder that is gone is no error: nothing is there.
        let gone = walk(root, &root.join("nope"), &root.join(".tandem"), &ignores);
        assert!(gone.is_empty() && gone.unreadable.is_empty());
    }
}
