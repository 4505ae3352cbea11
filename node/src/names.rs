//! PURE: names that one file system keeps apart and another does not.
//!
//! Linux file systems compare names byte for byte: `Notes.txt` and
//! `notes.txt`, or `café.txt` written in NFC (`é` as one character) and in
//! NFD (`e` and a combining accent), are two files. macOS (APFS, HFS+) and
//! Windows (NTFS) ignore case by default; APFS, HFS+, ZFS with
//! `normalization=` and ext4/f2fs with `casefold` compare Unicode names in a
//! normal form. There the two spellings are one file, so the second one a
//! peer sends would overwrite the first (or be written into the first's
//! folder). A node on such a file system refuses it; a node whose file system
//! keeps them apart syncs both and warns (see `core/names.rs`).
//!
//! No I/O here: the fold key of a name, how two spellings differ, where a
//! name meets another spelling of itself among its siblings, and the
//! collisions in a sorted list of paths.
//!
//! Choices:
//! - **Case** is folded with [`char::to_lowercase`], one character at a time:
//!   close to what NTFS and APFS do (a simple case mapping: `ß` stays `ß`,
//!   never `ss`), and without `str::to_lowercase`'s context rule for a
//!   word-final Greek sigma, which would give `ΟΔΟΣ` and `οδοσ` different
//!   keys. Not handled: locale rules (Turkish dotted and dotless i) and the
//!   few characters where NTFS's upcase table differs from Unicode's
//!   lowercase mapping.
//! - **Unicode form**: canonical equivalence, through NFC; both together are
//!   Unicode's canonical caseless match, NFC(lower(NFD(name))), with
//!   lowercasing in place of full case folding.
//! - Paths are compared **one component at a time** with their siblings.
//!   `Docs/a` and `docs/b` are not two spellings of one path, but their
//!   folders `Docs` and `docs` are, and on a case-insensitive file system
//!   they are one folder: `docs/b` would land in `Docs`. So a path is
//!   refused when any of its folders is another spelling of a folder here,
//!   and a collision is reported once, for the folders, not for every path
//!   inside them.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use tandem_common::RelPath;
use tandem_common::proto::NameDifference;
use unicode_normalization::UnicodeNormalization;

/// Which differences between two spellings a file system ignores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Folding {
    /// Upper and lower case are one name.
    pub case: bool,
    /// Canonically equivalent Unicode forms (NFC, NFD) are one name.
    pub unicode: bool,
}

impl Folding {
    /// Every spelling is a name of its own (Linux file systems).
    pub const EXACT: Folding = Folding {
        case: false,
        unicode: false,
    };
    /// Case-insensitive and normalizing (macOS by default).
    pub const ALL: Folding = Folding {
        case: true,
        unicode: true,
    };

    /// Some spellings are one name.
    pub fn any(self) -> bool {
        self.case || self.unicode
    }

    /// Every difference `self` ignores, `other` ignores too.
    pub fn within(self, other: Folding) -> bool {
        (!self.case || other.case) && (!self.unicode || other.unicode)
    }
}

impl std::fmt::Display for Folding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match (self.case, self.unicode) {
            (false, false) => "tells every spelling of a name apart (case and Unicode form)",
            (true, false) => "does not tell apart names that differ only in case",
            (false, true) => {
                "does not tell apart names that differ only in Unicode form (NFC and NFD)"
            }
            (true, true) => "does not tell apart names that differ only in case or Unicode form",
        })
    }
}

/// `name` as a file system that ignores the differences in `f` compares it:
/// two names are one there exactly when their keys are equal.
pub fn key(name: &str, f: Folding) -> Cow<'_, str> {
    if name.is_ascii() {
        // The common case, without allocating when nothing changes.
        return if f.case && name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
    }
    match (f.case, f.unicode) {
        (false, false) => Cow::Borrowed(name),
        (true, false) => Cow::Owned(name.chars().flat_map(char::to_lowercase).collect()),
        (false, true) if unicode_normalization::is_nfc(name) => Cow::Borrowed(name),
        (false, true) => Cow::Owned(name.nfc().collect()),
        (true, true) => Cow::Owned(name.nfd().flat_map(char::to_lowercase).nfc().collect()),
    }
}

/// How spellings `a` and `b` of one name differ; `None` when they are the
/// same spelling or not the same name even folding both case and form.
pub fn difference(a: &str, b: &str) -> Option<NameDifference> {
    const CASE: Folding = Folding {
        case: true,
        unicode: false,
    };
    const UNICODE: Folding = Folding {
        case: false,
        unicode: true,
    };
    if a == b {
        None
    } else if key(a, UNICODE) == key(b, UNICODE) {
        Some(NameDifference::Unicode)
    } else if key(a, CASE) == key(b, CASE) {
        Some(NameDifference::Case)
    } else if key(a, Folding::ALL) == key(b, Folding::ALL) {
        Some(NameDifference::CaseAndUnicode)
    } else {
        None
    }
}

/// What a folder holds under a name, for a file system folding `f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// This very spelling.
    Exact,
    /// Another spelling of it (and not this one).
    Other(&'a str),
    /// Nothing by that name.
    Absent,
}

/// Looks `name` up among `siblings` (the names in its folder) the way a file
/// system folding `f` would: the exact spelling first, else another one.
pub fn lookup<'a>(
    name: &str,
    siblings: impl IntoIterator<Item = &'a str>,
    f: Folding,
) -> Lookup<'a> {
    let k = key(name, f);
    let mut other = None;
    for s in siblings {
        if s == name {
            return Lookup::Exact;
        }
        if other.is_none() && f.any() && key(s, f) == k {
            other = Some(s);
        }
    }
    other.map_or(Lookup::Absent, Lookup::Other)
}

/// A name that this node does not write: another spelling of it (or of one
/// of its folders) is here, and the file system here does not tell the two
/// apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash {
    /// The spelling here (a path as it is on disk).
    pub ours: String,
    /// The spelling that was not written (the path, or the folder of it
    /// that clashes).
    pub theirs: String,
    /// How they differ.
    pub how: NameDifference,
}

impl std::fmt::Display for Clash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is here, and this file system cannot hold {} beside it (the names differ {})",
            self.ours, self.theirs, self.how
        )
    }
}

/// Two paths that are one on a case-insensitive or normalizing file system.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pair {
    /// The first in path order.
    pub a: RelPath,
    /// The other.
    pub b: RelPath,
    /// How they differ.
    pub how: NameDifference,
}

impl Pair {
    /// The folder both are in (`None`: the top).
    pub fn folder(&self) -> Option<RelPath> {
        self.a.parent()
    }
}

impl std::fmt::Display for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} and {} (they differ {})", self.a, self.b, self.how)
    }
}

/// A folder being compared: the fold keys of its names seen so far, each
/// with the first path that had it.
struct Frame<'a> {
    dir: &'a str,
    seen: HashMap<Cow<'a, str>, &'a str>,
    /// The other spellings reported (a folder is noted again when a path
    /// inside it comes after others).
    reported: HashSet<&'a str>,
}

impl<'a> Frame<'a> {
    fn new(dir: &'a str) -> Self {
        Frame {
            dir,
            seen: HashMap::new(),
            reported: HashSet::new(),
        }
    }
}

/// The pairs of siblings among `paths` that only a case-insensitive or
/// normalizing file system would take for one name. `paths` must be sorted
/// (the index's order); a folder that is not itself among them counts
/// through the paths inside it. Each folder's names are held only while its
/// paths go by (they are contiguous in sorted order), so this needs memory
/// for one branch of the tree, not for the whole list.
pub fn collisions<'a>(paths: impl IntoIterator<Item = &'a RelPath>) -> Vec<Pair> {
    let mut out = Vec::new();
    let mut stack = vec![Frame::new("")];
    for p in paths {
        let s = p.as_str();
        let parent = s.rfind('/').map_or("", |i| &s[..i]);
        while stack.len() > 1 && !stack.last().is_some_and(|f| within(parent, f.dir)) {
            stack.pop();
        }
        // Down to the parent, through folders that are not listed.
        while let Some(top) = stack.last_mut()
            && top.dir != parent
        {
            let start = if top.dir.is_empty() {
                0
            } else {
                top.dir.len() + 1
            };
            let end = s[start..].find('/').map_or(s.len(), |i| start + i);
            let folder = &s[..end];
            note(top, folder, start, &mut out);
            stack.push(Frame::new(folder));
        }
        if let Some(top) = stack.last_mut() {
            let start = if parent.is_empty() {
                0
            } else {
                parent.len() + 1
            };
            note(top, s, start, &mut out);
        }
    }
    out
}

/// True when folder `parent` is `dir` or inside it.
fn within(parent: &str, dir: &str) -> bool {
    dir.is_empty()
        || parent == dir
        || (parent.starts_with(dir) && parent.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// Records the path `path` (its name starts at `start`) in `frame`; a name
/// spelled differently before is a collision.
fn note<'a>(frame: &mut Frame<'a>, path: &'a str, start: usize, out: &mut Vec<Pair>) {
    let name = &path[start..];
    match frame.seen.entry(key(name, Folding::ALL)) {
        Entry::Vacant(v) => {
            v.insert(path);
        }
        Entry::Occupied(o) => {
            let first = *o.get();
            if first == path || !frame.reported.insert(path) {
                return;
            }
            let how = difference(&first[start..], name);
            if let (Some(how), Ok(a), Ok(b)) = (how, RelPath::new(first), RelPath::new(path)) {
                out.push(Pair { a, b, how });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NFC: &str = "caf\u{e9}.txt";
    const NFD: &str = "cafe\u{301}.txt";
    const CASE: Folding = Folding {
        case: true,
        unicode: false,
    };
    const UNICODE: Folding = Folding {
        case: false,
        unicode: true,
    };

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn pairs(paths: &[&str]) -> Vec<(String, String, NameDifference)> {
        let mut v: Vec<RelPath> = paths.iter().map(|p| rel(p)).collect();
        v.sort();
        collisions(&v)
            .into_iter()
            .map(|p| (p.a.to_string(), p.b.to_string(), p.how))
            .collect()
    }

    #[test]
    fn keys_fold_what_the_file_system_folds_and_nothing_else() {
        assert_ne!(NFC, NFD, "two spellings");
        assert_eq!(key(NFC, UNICODE), key(NFD, UNICODE));
        assert_ne!(
            key(NFC, CASE),
            key(NFD, CASE),
            "case folding keeps forms apart"
        );
        assert_eq!(key("README", CASE), key("readme", CASE));
        assert_ne!(key("README", UNICODE), key("readme", UNICODE));
        assert_eq!(key("Caf\u{c9}.TXT", Folding::ALL), key(NFD, Folding::ALL));
        assert_eq!(key("README", Folding::EXACT), "README");
        // Nothing is allocated for what does not change.
        assert!(matches!(key("readme.md", Folding::ALL), Cow::Borrowed(_)));
        assert!(matches!(key(NFC, UNICODE), Cow::Borrowed(_)));
        // Distinct names stay distinct after folding.
        for (a, b) in [
            ("a.txt", "b.txt"),
            ("stra\u{df}e", "strasse"),
            ("resume", "r\u{e9}sum\u{e9}"),
            ("file", "file "),
        ] {
            assert_ne!(key(a, Folding::ALL), key(b, Folding::ALL), "{a} {b}");
            assert_eq!(difference(a, b), None, "{a} {b}");
        }
        // No context rule: a final sigma folds like any other.
        assert_eq!(key("ΟΔΟΣ", CASE), key("οδοσ", CASE));
    }

    #[test]
    fn differences_are_named() {
        assert_eq!(difference("README", "readme"), Some(NameDifference::Case));
        assert_eq!(difference(NFC, NFD), Some(NameDifference::Unicode));
        assert_eq!(
            difference("Caf\u{e9}.txt", NFD),
            Some(NameDifference::CaseAndUnicode)
        );
        assert_eq!(difference("same", "same"), None);
        assert_eq!(
            NameDifference::Case.to_string(),
            "only in case",
            "read as: the names differ only in case"
        );
    }

    #[test]
    fn lookups_prefer_the_exact_spelling() {
        let here = ["Notes.txt", "other", NFD];
        assert_eq!(lookup("Notes.txt", here, CASE), Lookup::Exact);
        assert_eq!(lookup("notes.txt", here, CASE), Lookup::Other("Notes.txt"));
        assert_eq!(lookup("notes.txt", here, UNICODE), Lookup::Absent);
        assert_eq!(lookup("notes.txt", here, Folding::EXACT), Lookup::Absent);
        assert_eq!(lookup(NFC, here, UNICODE), Lookup::Other(NFD));
        assert_eq!(lookup(NFC, here, CASE), Lookup::Absent);
        // Both spellings here (made on a file system that keeps them apart):
        // ours is ours.
        assert_eq!(
            lookup("notes.txt", ["Notes.txt", "notes.txt"], CASE),
            Lookup::Exact
        );
    }

    #[test]
    fn collisions_between_siblings() {
        assert_eq!(
            pairs(&["Notes.txt", "notes.txt", "other.txt"]),
            [("Notes.txt".into(), "notes.txt".into(), NameDifference::Case)]
        );
        assert_eq!(
            pairs(&[NFC, NFD]),
            [(NFD.into(), NFC.into(), NameDifference::Unicode)]
        );
        // Each spelling against the first of its key.
        assert_eq!(
            pairs(&["A", "a", "\u{c1}", "A\u{301}", "\u{e1}"]),
            [
                ("A".into(), "a".into(), NameDifference::Case),
                ("A\u{301}".into(), "\u{c1}".into(), NameDifference::Unicode),
                (
                    "A\u{301}".into(),
                    "\u{e1}".into(),
                    NameDifference::CaseAndUnicode
                ),
            ]
        );
        assert_eq!(pairs(&["a.txt", "b.txt", "d/a.txt", "d/A.TXT.bak"]), []);
        // The same name in different folders is no collision.
        assert_eq!(pairs(&["x/readme", "y/README"]), []);
    }

    #[test]
    fn folders_collide_once_not_for_every_path_inside() {
        // Both folders listed, with different files inside.
        assert_eq!(
            pairs(&["Docs", "Docs/a", "docs", "docs/b"]),
            [("Docs".into(), "docs".into(), NameDifference::Case)]
        );
        // The same file in both: still the folders only.
        assert_eq!(
            pairs(&["Docs", "Docs/a", "docs", "docs/a"]),
            [("Docs".into(), "docs".into(), NameDifference::Case)]
        );
        // Folders not listed themselves count through their paths.
        assert_eq!(
            pairs(&["Docs/a", "docs/b/c"]),
            [("Docs".into(), "docs".into(), NameDifference::Case)]
        );
        // Deeper down, among names that sort between a folder and its
        // paths (`a-b` < `a/` < `a0`).
        assert_eq!(
            pairs(&[
                "a", "a-b", "a-b/x", "a.txt", "a/B", "a/b", "a/b/c", "a0", "A0"
            ]),
            [
                ("a/B".into(), "a/b".into(), NameDifference::Case),
                ("A0".into(), "a0".into(), NameDifference::Case),
            ]
        );
    }
}
