//! Peers' changes written down just before they are made on disk, so that a
//! crash between the disk change and the index commit that records it is
//! not taken for a change made here.
//!
//! Without it, a node killed right after it made a peer's folder, renamed a
//! peer's file into place or installed a fetched version (and before the
//! store saved the record) found the result at its next start as a local
//! add or edit: a write of its own, concurrent with the peer's. The peer's
//! identical entry, sent again, was then merged with it (same content), and
//! a later delete or edit on a node that had not seen the merge did not
//! cover that phantom write: the folder or file came back, or two equal
//! histories read as a conflict (chaos mesh3 seed 226).
//!
//! Each entry is appended (one `write`, no fsync) before the step that
//! carries it out. That covers a killed or crashing process, which loses
//! nothing the kernel has; a power cut can still lose an entry whose step
//! reached the disk (nothing orders the two without an fsync each, which
//! would cost one disk flush per file), and then leaves things as they
//! were before the journal. Folders an install makes for a peer's file
//! before the folder's own entry came are written down too (as entries
//! with an empty version, see [`Journal::note_made`]), so the next start
//! goes on waiting for that entry instead of taking the folder for one
//! made here (see `Core::note_made`). The next start
//! takes an entry for the peer's version only where the disk shows exactly
//! it and the saved index holds an older version (see
//! [`crate::index::Index::expect_applied`]): an entry whose step failed, or
//! that was saved long ago, changes nothing.
//!
//! Two files take turns, so one can be emptied while the other is written:
//! when a batch of the index goes to the store, the file written since the
//! last batch is closed for appends, and it is emptied once that batch is
//! saved. Each frame is a length, a check (four bytes of the payload's
//! BLAKE3) and the payload: the entry (without its block list, which the
//! scan reads from the file) and the peer it came from when exact. A torn
//! or damaged tail is ignored. The files' names carry the format's version
//! (`journal-v1-a`, `journal-v1-b`); an older node ignores them, and a
//! later format would use other names.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use tandem_common::{EntryKind, FileEntry, NodeId, RelPath, codec};

/// Names of the two files, in the state folder.
const NAMES: [&str; 2] = ["journal-v1-a", "journal-v1-b"];

/// Bytes before each payload: its length and its check, 4 each.
const HEAD: usize = 8;

/// A peer's entry as written down, and the peer it came from (when the
/// entry is exactly that peer's).
pub(crate) type Noted = (FileEntry, Option<NodeId>);

/// One of the two files.
#[derive(Default)]
struct Side {
    file: Option<File>,
    /// Bytes in it.
    len: u64,
    /// Appended to since it was last closed for appends.
    fresh: bool,
    /// Closed for appends when the index's sequence number was this:
    /// emptied once the store has everything up to it.
    sealed_at: Option<u64>,
    /// Holds folders written down by [`Journal::note_made`].
    made: bool,
}

/// The journal (see the module's documentation).
pub(super) struct Journal {
    sides: [Side; 2],
    /// The side appended to.
    current: usize,
    buf: Vec<u8>,
    /// A write failed, and this was logged: not again until one succeeds.
    failing: bool,
}

impl Journal {
    /// Opens the journal in `state_dir`, with the entries it holds from the
    /// last run. A file that cannot be opened is logged and left out: the
    /// journal only narrows a crash's window, nothing depends on it.
    pub(super) fn open(state_dir: &Path) -> (Journal, Vec<Noted>) {
        let mut noted = Vec::new();
        let mut sides: [Side; 2] = Default::default();
        for (side, name) in sides.iter_mut().zip(NAMES) {
            let path = state_dir.join(name);
            match open_side(&path, &mut noted) {
                Ok((file, len)) => {
                    side.file = Some(file);
                    side.len = len;
                    side.made = len > 0;
                }
                Err(e) => tracing::warn!(
                    "cannot open {}: {e}; a crash right after a peer's change is made here may record it as a change of this node",
                    path.display()
                ),
            }
        }
        // Appends go to an empty file when there is one; what the last run
        // wrote down stays until `started` (and then a save) says the
        // start-up has recorded it.
        let usable =
            |i: usize, empty: bool| sides[i].file.is_some() && (!empty || sides[i].len == 0);
        let current = [0, 1]
            .into_iter()
            .find(|&i| usable(i, true))
            .or_else(|| [0, 1].into_iter().find(|&i| usable(i, false)))
            .unwrap_or(0);
        let journal = Journal {
            sides,
            current,
            buf: Vec::new(),
            failing: false,
        };
        (journal, noted)
    }

    /// Writes down `entry` (from `origin`) before it is carried out. Its
    /// block list is left out (and put back): the start-up reads it from
    /// the file, and a large file's list is long.
    pub(super) fn note(&mut self, entry: &mut FileEntry, origin: Option<NodeId>) {
        let blocks = std::mem::take(&mut entry.blocks);
        let noted = (&*entry, origin);
        let payload = codec::encode(&noted);
        entry.blocks = blocks;
        self.append(payload, &entry.path);
    }

    /// Writes down the folder at `path`, about to be made for a peer's
    /// file before that peer's entry for the folder came: an entry with an
    /// empty version (no peer's entry has one), see [`is_made_folder`].
    pub(super) fn note_made(&mut self, path: RelPath) {
        let mut folder = FileEntry {
            path,
            kind: EntryKind::Dir,
            size: 0,
            mtime_ns: 0,
            mode: 0,
            hash: Default::default(),
            blocks: Vec::new(),
            version: Default::default(),
            written: Default::default(),
            losers: Default::default(),
            deleted: false,
        };
        self.sides[self.current].made = true;
        self.note(&mut folder, None);
    }

    fn append(&mut self, payload: Result<bytes::Bytes, codec::CodecError>, path: &RelPath) {
        let side = &mut self.sides[self.current];
        let Some(file) = side.file.as_mut() else {
            return;
        };
        let written = payload.map_err(std::io::Error::other).and_then(|p| {
            self.buf.clear();
            self.buf.extend_from_slice(&(p.len() as u32).to_be_bytes());
            self.buf.extend_from_slice(&check(&p));
            self.buf.extend_from_slice(&p);
            file.write_all(&self.buf)
        });
        match written {
            Ok(()) => {
                side.len += self.buf.len() as u64;
                side.fresh = true;
                self.failing = false;
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(
                        "cannot write the change of {path} down before making it ({e}); a crash right after it may record it as a change of this node"
                    );
                }
                self.failing = true;
                // A partial frame would hide every later one.
                let _ = file.set_len(side.len);
            }
        }
    }

    /// The start-up has looked at the whole tree: what the last run wrote
    /// down is recorded, and goes with the next batch saved.
    pub(super) fn started(&mut self) {
        for side in &mut self.sides {
            if side.len > 0 && side.sealed_at.is_none() {
                side.fresh = true;
            }
        }
    }

    /// A batch holding every record up to `seq` goes to the store: what was
    /// written down so far is recorded in it. New entries go to the other
    /// file if that one is empty.
    pub(super) fn seal(&mut self, seq: u64) {
        for side in &mut self.sides {
            if side.fresh {
                side.fresh = false;
                side.sealed_at = Some(seq);
            }
        }
        let other = &self.sides[1 - self.current];
        let free = other.file.is_some() && other.sealed_at.is_none() && other.len == 0;
        if free {
            self.current = 1 - self.current;
        }
    }

    /// The store holds everything up to `seq`: a file whose entries are all
    /// recorded by then is emptied. True when that file held folders
    /// written down by [`Journal::note_made`]: those still waiting are to
    /// be written down again.
    pub(super) fn saved(&mut self, seq: u64) -> bool {
        let mut made = false;
        for side in &mut self.sides {
            let covered = side.sealed_at.is_some_and(|s| s <= seq) && !side.fresh;
            if !covered {
                continue;
            }
            let Some(file) = side.file.as_mut() else {
                side.sealed_at = None;
                continue;
            };
            // Not emptied: tried again at the next save. Its entries change
            // nothing at the next start but the time it takes to read them.
            match file.set_len(0) {
                Ok(()) => {
                    side.len = 0;
                    side.sealed_at = None;
                    made |= std::mem::take(&mut side.made);
                }
                Err(e) => tracing::debug!("cannot empty a journal file: {e}"),
            }
        }
        made
    }
}

/// Whether `e` is a folder written down by [`Journal::note_made`].
pub(super) fn is_made_folder(e: &FileEntry) -> bool {
    e.kind == EntryKind::Dir && e.version.max_counter() == 0
}

/// Four bytes of the BLAKE3 of `payload`.
fn check(payload: &[u8]) -> [u8; 4] {
    let h = tandem_common::ContentHash::of(payload);
    [h.0[0], h.0[1], h.0[2], h.0[3]]
}

/// Opens (or makes) the file at `path` for appends, adding the entries it
/// holds to `noted`. Returns it and its length.
fn open_side(path: &PathBuf, noted: &mut Vec<Noted>) -> std::io::Result<(File, u64)> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let (entries, good) = parse(&bytes);
    noted.extend(entries);
    if good < bytes.len() {
        tracing::warn!(
            "{}: the last {} bytes are torn or damaged; ignored",
            path.display(),
            bytes.len() - good
        );
        // Appends after them could not be read: the file is cut first.
        file.set_len(good as u64)?;
    }
    Ok((file, good as u64))
}

/// The entries of a journal file's bytes, up to the first frame that is
/// torn, damaged or not an entry, and how many bytes they take.
fn parse(bytes: &[u8]) -> (Vec<Noted>, usize) {
    let mut entries = Vec::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + HEAD) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let Some(payload) = bytes.get(at + HEAD..at + HEAD + len) else {
            break;
        };
        if check(payload) != head[4..HEAD] {
            break;
        }
        match codec::decode::<Noted>(payload) {
            Ok(n) => entries.push(n),
            Err(_) => break,
        }
        at += HEAD + len;
    }
    (entries, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_common::ContentHash;
    use tandem_common::model::{VersionVector, Writes};

    fn entry(path: &str, counter: u64) -> FileEntry {
        let peer = NodeId(uuid::Uuid::from_bytes([7; 16]));
        let mut version = VersionVector::default();
        version.set(peer, counter);
        FileEntry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File,
            size: 3,
            mtime_ns: 1,
            mode: 0o644,
            hash: ContentHash::of(b"abc"),
            blocks: vec![ContentHash::of(b"abc")],
            version,
            written: Writes::default(),
            losers: Writes::default(),
            deleted: false,
        }
    }

    #[test]
    fn entries_come_back_without_their_blocks_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, old) = Journal::open(dir.path());
        assert!(old.is_empty());
        let mut a = entry("a", 1);
        let mut b = entry("d/b", 2);
        j.note(&mut a, None);
        j.note(&mut b, Some(NodeId(uuid::Uuid::from_bytes([7; 16]))));
        assert_eq!(a.blocks.len(), 1, "the caller's entry keeps its list");
        drop(j);
        // A frame cut short, as a crash in the middle of a write leaves it.
        let path = dir.path().join(NAMES[0]);
        let whole = std::fs::metadata(&path).unwrap().len();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&[0, 0, 0, 40, 1, 2]).unwrap();
        drop(f);
        let (_j, got) = Journal::open(dir.path());
        let paths: Vec<&str> = got.iter().map(|(e, _)| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "d/b"]);
        assert!(got[0].0.blocks.is_empty());
        assert_eq!(got[1].0.version, b.version);
        assert_eq!(got[1].1, Some(NodeId(uuid::Uuid::from_bytes([7; 16]))));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
    }

    #[test]
    fn a_damaged_frame_ends_what_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path());
        j.note(&mut entry("a", 1), None);
        j.note(&mut entry("b", 2), None);
        drop(j);
        let path = dir.path().join(NAMES[0]);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_j, got) = Journal::open(dir.path());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.path.as_str(), "a");
    }

    #[test]
    fn a_file_is_emptied_only_once_its_entries_are_saved() {
        let dir = tempfile::tempdir().unwrap();
        let len = |i: usize| std::fs::metadata(dir.path().join(NAMES[i])).unwrap().len();
        let (mut j, _) = Journal::open(dir.path());
        j.note(&mut entry("a", 1), None);
        // A batch up to 10 goes to the store; new entries go to the other
        // file.
        j.seal(10);
        j.note(&mut entry("b", 2), None);
        j.saved(9);
        assert!(len(0) > 0, "not saved yet");
        j.saved(10);
        assert_eq!(len(0), 0);
        assert!(len(1) > 0, "b is not in a saved batch");
        // b's batch; the first file is empty, so it takes the next entries.
        j.seal(12);
        j.note(&mut entry("c", 3), None);
        assert!(len(0) > 0);
        j.saved(12);
        assert_eq!(len(1), 0);
        assert!(len(0) > 0, "c is not in a saved batch");
        // Appended to after its batch went: kept until the next one.
        j.seal(13);
        j.note(&mut entry("e", 4), None);
        j.saved(13);
        assert_eq!(len(0), 0);
        assert!(len(1) > 0);
        drop(j);
        // The last run's entries stay through saves until the start-up has
        // looked at the tree; new ones go to the empty file.
        let (mut j, left) = Journal::open(dir.path());
        let paths: Vec<&str> = left.iter().map(|(e, _)| e.path.as_str()).collect();
        assert_eq!(paths, ["e"]);
        j.note(&mut entry("f", 5), None);
        assert!(len(0) > 0);
        j.seal(20);
        j.saved(20);
        assert_eq!(len(0), 0);
        assert!(len(1) > 0, "the start-up has not recorded e yet");
        j.started();
        j.seal(21);
        assert!(j.saved(21), "the last run's file may hold folders");
        assert_eq!(len(1), 0);
        // A file holding folders written down says so when it is emptied,
        // once.
        j.note_made(RelPath::new("made").unwrap());
        j.seal(22);
        assert!(j.saved(22));
        j.note(&mut entry("g", 6), None);
        j.seal(23);
        assert!(!j.saved(23));
        let (_j, left) = Journal::open(dir.path());
        assert!(left.is_empty());
    }
}
