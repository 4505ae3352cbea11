//! Files taken out of the tree in the middle of a step, and what the next
//! start does with them after a crash.
//!
//! A delete moves our file aside (`UUID~PEER.TAG.aside`) to check it before
//! it is removed; an install swaps the fetched file (first renamed to
//! `UUID-iINODE[~PEER].TAG.swapped`) with ours, which then sits under that
//! name until it is kept. `TAG` is the file's path (`/` and `%`
//! percent-encoded); `PEER` is the node whose change replaces ours (in
//! letters, digits, `-` and `_` of ASCII), left out of an install when ours
//! lost a conflict (it is kept as a conflict copy then) and of a client's
//! upload. Either file may be a person's change, so a crash there must not
//! lose it. At start:
//!
//! - a swapped file whose inode is still the one its name gives is the
//!   fetched file itself (the crash came before the swap or after it was
//!   undone): the peer's version, fetched again; it is removed;
//! - a file with a `PEER` that is still exactly what the index (as last
//!   saved) holds at its path is no person's change: it is what the step
//!   replaced, and the step is finished (the file is kept as a version
//!   replaced by `PEER`'s change, as the step would have kept it; kept as a
//!   conflict copy, it would read as a conflict that nothing newer won);
//! - anything else is kept in the conflicts folder as a copy of its path by
//!   this node, like any conflict copy, so it is listed and can be
//!   restored. A name too long for its path (or written by a version before
//!   tags) has no `TAG`; its file is kept as `interrupted-delete-HEAD` or
//!   `interrupted-install-HEAD`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tandem_common::RelPath;

/// Suffix of a file a delete moved aside in the temp folder to check it.
const ASIDE_SUFFIX: &str = ".aside";

/// Suffix of a fetched file about to be swapped with ours, and then of
/// ours (or a person's change) that came out, until it is kept.
const SWAPPED_SUFFIX: &str = ".swapped";

/// In a swapped file's name, what comes before the fetched file's inode.
const SWAPPED_INODE: &str = "-i";

/// Longest name given (most file systems take 255 bytes; eCryptfs 143).
const MAX_NAME: usize = 143;

/// Between the head of a file's name (its UUID, and inode) and the name of
/// the node whose change takes it out of the tree (never in a UUID, nor in
/// a name as [`name_part`] writes it).
const CAUSE: char = '~';

/// Longest node name (in bytes) a temp file's name carries.
const MAX_CAUSE: usize = 32;

/// A fresh name for our file at `path` set aside by `cause`'s delete.
pub(super) fn aside_name(path: &RelPath, cause: &str) -> String {
    let head = uuid::Uuid::new_v4().simple().to_string();
    tagged(head, Some(cause), path, ASIDE_SUFFIX)
}

/// `name` as part of a temp file's name: ASCII letters, digits, `-` and
/// `_` (anything else becomes `_`, so every file system takes it and it
/// never holds `.` or `~`), at most [`MAX_CAUSE`] bytes.
fn name_part(name: &str) -> String {
    name.chars()
        .take(MAX_CAUSE)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A fresh name for the fetched file (inode `inode`) about to be swapped
/// with ours at `path`; without the path if not `tag` (for a file system
/// that refuses a character of it). `replaced_by`: the node whose change
/// replaces ours without a conflict (ours becomes a version of it), if so.
pub(super) fn swapped_name(
    path: &RelPath,
    inode: u64,
    tag: bool,
    replaced_by: Option<&str>,
) -> String {
    let head = format!("{}{SWAPPED_INODE}{inode}", uuid::Uuid::new_v4().simple());
    if tag {
        tagged(head, replaced_by, path, SWAPPED_SUFFIX)
    } else {
        // Without the path the start could not finish the step anyway.
        format!("{head}{SWAPPED_SUFFIX}")
    }
}

/// `HEAD~CAUSE.TAG.SUFFIX`; when that is too long a name, `HEAD.TAG.SUFFIX`
/// (the path matters more: without it the file is kept under an anonymous
/// name), else `HEAD.SUFFIX`.
fn tagged(head: String, cause: Option<&str>, path: &RelPath, suffix: &str) -> String {
    let mut tag = String::with_capacity(path.as_str().len());
    for c in path.as_str().chars() {
        match c {
            '%' => tag.push_str("%25"),
            '/' => tag.push_str("%2F"),
            c => tag.push(c),
        }
    }
    let fits = |h: &str| h.len() + 1 + tag.len() + suffix.len() <= MAX_NAME;
    if let Some(c) = cause {
        let with = format!("{head}{CAUSE}{}", name_part(c));
        if fits(&with) {
            return format!("{with}.{tag}{suffix}");
        }
    }
    if fits(&head) {
        format!("{head}.{tag}{suffix}")
    } else {
        format!("{head}{suffix}")
    }
}

/// The path a tag names, if it is a valid one.
fn untag(tag: &str) -> Option<RelPath> {
    let mut out = String::with_capacity(tag.len());
    let mut rest = tag;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let c = match rest.get(i + 1..i + 3)? {
            "25" => '%',
            "2F" => '/',
            _ => return None,
        };
        out.push(c);
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    RelPath::new(out).ok()
}

/// Whether the swapped file at `p` (its name's head `head`) is still the
/// fetched file its name says (by inode), not what an install took out of
/// the tree.
fn holds_fetched(p: &Path, head: &str) -> bool {
    let head = head.split_once(CAUSE).map_or(head, |(h, _)| h);
    let named = head
        .rsplit_once(SWAPPED_INODE)
        .and_then(|(_, ino)| ino.parse::<u64>().ok());
    let now = std::fs::symlink_metadata(p).ok().map(|m| m.ino());
    named.is_some() && named == now
}

/// Empties the temp folder `STATE/tmp` at start (pending downloads start
/// again from scratch), keeping what a delete or an install interrupted by
/// a crash had taken out of the tree in the conflicts folder as a copy by
/// node `me` (see the module doc), except a file whose name gives the peer
/// whose change replaced it and that `indexed(path, file)` says is the
/// version the index holds at its path: that step is finished, the file
/// kept as a version. Returns where conflict copies are kept.
pub(super) fn clear_temp(
    state_dir: &Path,
    me: &str,
    temp_dir_prefix: &str,
    indexed: &dyn Fn(&RelPath, &Path) -> bool,
) -> Vec<PathBuf> {
    let mut kept = Vec::new();
    let Ok(rd) = std::fs::read_dir(state_dir.join("tmp")) else {
        return kept;
    };
    for e in rd.flatten() {
        let p = e.path();
        let file_name = e.file_name().to_string_lossy().into_owned();
        let interrupted = [
            (ASIDE_SUFFIX, "delete", "a delete"),
            (SWAPPED_SUFFIX, "install", "an install"),
        ]
        .into_iter()
        .find_map(|(suffix, what, a_what)| Some((file_name.strip_suffix(suffix)?, what, a_what)));
        if let Some((stem, what, a_what)) = interrupted {
            let (head, path) = match stem.split_once('.') {
                Some((head, tag)) => (head, untag(tag)),
                None => (stem, None),
            };
            if what == "install" && holds_fetched(&p, head) {
                // The peer's version, to be fetched again.
                let _ = std::fs::remove_file(&p);
                continue;
            }
            // Our indexed version that a peer's change replaced (a delete,
            // or an install that was no conflict): a version of it.
            let cause = head.split_once(CAUSE).map(|(_, c)| c);
            if let (Some(path), Some(cause)) = (path.as_ref(), cause)
                && !cause.is_empty()
                && indexed(path, &p)
            {
                keep_replaced(state_dir, &p, path, cause, a_what);
                continue;
            }
            match keep(
                state_dir,
                &p,
                path.as_ref(),
                me,
                &format!("interrupted-{what}-{head}"),
            ) {
                Ok(dest) => {
                    let of = path
                        .as_ref()
                        .map(|p| format!(" of {p}"))
                        .unwrap_or_default();
                    tracing::warn!(
                        "{a_what}{of} was interrupted by a crash; the file it had taken out of the tree is kept as the conflict copy {}",
                        dest.display()
                    );
                    kept.push(dest);
                }
                Err(err) => tracing::error!(
                    "cannot keep {}, which {a_what} interrupted by a crash had taken out of the tree: {err}; leaving it there",
                    p.display()
                ),
            }
            continue;
        }
        if file_name.starts_with(temp_dir_prefix) {
            let _ = std::fs::remove_dir_all(&p);
            continue;
        }
        let _ = std::fs::remove_file(p);
    }
    kept
}

/// Finishes `a_what` (a delete, an install) of `path` that a crash
/// interrupted after it had taken our indexed version out of the tree, to
/// `p`: keeps it as a version replaced by `cause`'s change, as the step
/// would have. The scan at start records what is at the path now (nothing
/// after a delete; the peer's version after an install).
fn keep_replaced(state_dir: &Path, p: &Path, path: &RelPath, cause: &str, a_what: &str) {
    // The retention set for this run applies when the versions folder is
    // next cleaned; here any size is taken.
    let keeper = crate::versions::Keeper {
        dir: Some(crate::versions::folder(state_dir)),
        max_bytes: u64::MAX,
        path: path.clone(),
        cause: cause.to_string(),
    };
    let kept = keeper.keep(p);
    tracing::info!(
        "{a_what} of {path} (a change made on {cause}) was interrupted by a crash after it had taken the version indexed here out of the tree; finished: {}",
        kept.map_or("it is removed".to_string(), |d| format!(
            "kept as the version {}",
            d.display()
        ))
    );
}

/// Moves `p` into the conflicts folder: as a copy of `path` by `me` when
/// known, else under `anonymous`.
fn keep(
    state_dir: &Path,
    p: &Path,
    path: Option<&RelPath>,
    me: &str,
    anonymous: &str,
) -> std::io::Result<PathBuf> {
    let dir = crate::conflicts::folder(state_dir);
    std::fs::create_dir_all(&dir)?;
    let dest = match path {
        Some(path) => {
            let mtime_ns = crate::scan::local_stat(&std::fs::symlink_metadata(p)?).mtime_ns;
            crate::conflicts::aside_dest(&dir, path, me, mtime_ns)?
        }
        None => dir.join(anonymous),
    };
    std::fs::rename(p, &dest)?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path comes back from its tag, odd characters and all; a name is
    /// never longer than a file system takes (the tag is left out).
    #[test]
    fn names_carry_the_path_when_it_fits() {
        for p in ["f.txt", "a/b/c.d.e", "100%/x%2F.txt", "dir/.hidden", "é/ü"] {
            let path = RelPath::new(p).unwrap();
            for name in [
                aside_name(&path, "B"),
                swapped_name(&path, 42, true, None),
                swapped_name(&path, 42, true, Some("B")),
            ] {
                let stem = name
                    .strip_suffix(ASIDE_SUFFIX)
                    .or_else(|| name.strip_suffix(SWAPPED_SUFFIX))
                    .unwrap();
                let (_, tag) = stem.split_once('.').unwrap();
                assert_eq!(untag(tag), Some(path.clone()), "{name}");
            }
        }
        let long = RelPath::new(format!("{}/{}", "d".repeat(200), "f".repeat(100))).unwrap();
        let cause = "a very long node name . / ~ with odd characters in it";
        for name in [
            aside_name(&long, cause),
            swapped_name(&long, u64::MAX, true, Some(cause)),
        ] {
            assert!(name.len() <= MAX_NAME, "{name}");
            let stem = name
                .strip_suffix(ASIDE_SUFFIX)
                .or_else(|| name.strip_suffix(SWAPPED_SUFFIX));
            assert!(!stem.unwrap().contains('.'), "{name}");
        }
        for bad in ["%", "%2", "%41", "..", "a%2F..%2Fb", ""] {
            assert_eq!(untag(bad), None, "{bad:?}");
        }
        // A peer's name goes in as ASCII, at most MAX_CAUSE bytes, and
        // gives way to the path when both do not fit.
        let wide = "日本語のノードの名前".repeat(8);
        let path = RelPath::new("x.txt").unwrap();
        let name = aside_name(&path, &wide);
        let (head, _) = name.split_once('.').unwrap();
        let (_, cause) = head.split_once(CAUSE).unwrap();
        assert!(
            cause.len() == MAX_CAUSE && cause.bytes().all(|b| b == b'_'),
            "{name}"
        );
        // Paths that fit only without the name (each kind's head differs).
        let (p1, p2) = (
            RelPath::new("p".repeat(100)).unwrap(),
            RelPath::new("q".repeat(78)).unwrap(),
        );
        for (mid, name) in [
            (&p1, aside_name(&p1, "a node")),
            (&p2, swapped_name(&p2, u64::MAX, true, Some("a node"))),
        ] {
            assert!(name.len() <= MAX_NAME, "{name}");
            let stem = name
                .strip_suffix(ASIDE_SUFFIX)
                .or_else(|| name.strip_suffix(SWAPPED_SUFFIX))
                .unwrap();
            let (head, tag) = stem.split_once('.').unwrap();
            assert_eq!(untag(tag).as_ref(), Some(mid), "{name}");
            assert!(!head.contains(CAUSE), "{name}");
        }
    }

    /// A swapped-out file is taken for the fetched one only when its
    /// inode is the one its name says.
    #[test]
    fn a_swapped_file_is_the_fetched_one_only_by_its_inode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"x").unwrap();
        let ino = std::fs::metadata(&p).unwrap().ino();
        let head = |s: &str| format!("0123456789abcdef0123456789abcdef{s}");
        assert!(holds_fetched(&p, &head(&format!("-i{ino}"))));
        assert!(holds_fetched(&p, &head(&format!("-i{ino}~B"))));
        assert!(!holds_fetched(&p, &head(&format!("-i{}~B", ino + 1))));
        assert!(!holds_fetched(&p, &head(&format!("-i{}", ino + 1))));
        for odd in ["", "-i", "-ix", "-i99999999999999999999999"] {
            assert!(!holds_fetched(&p, &head(odd)), "{odd:?}");
        }
        let gone = dir.path().join("gone");
        assert!(!holds_fetched(&gone, &head(&format!("-i{ino}"))));
    }

    /// At start: a set-aside or swapped-out file is kept as a conflict
    /// copy of the path its name gives, by this node, with its mtime; one
    /// without a path under its old anonymous name; a set-aside file the
    /// index still holds is kept as a version (its delete is finished); the
    /// fetched file itself and every other temp file are removed.
    #[test]
    fn the_start_keeps_what_was_taken_out_under_its_path() {
        let state = tempfile::tempdir().unwrap();
        let tmp = state.path().join("tmp");
        std::fs::create_dir_all(tmp.join("parts-3")).unwrap();
        let path = RelPath::new("notes/plan.txt").unwrap();
        let aside = tmp.join(aside_name(&path, "A"));
        std::fs::write(&aside, b"set aside").unwrap();
        // Set aside by a delete, and still what the index holds there.
        let done = RelPath::new("done/gone.txt").unwrap();
        let finished = tmp.join(aside_name(&done, "peer A.2"));
        std::fs::write(&finished, b"deleted").unwrap();
        let when = filetime::FileTime::from_unix_time(1_764_745_200, 0); // 2025-12-03 07:00 UTC
        filetime::set_file_mtime(&aside, when).unwrap();
        filetime::set_file_mtime(&finished, when).unwrap();
        let fetched = tmp.join("x");
        std::fs::write(&fetched, b"fetched").unwrap();
        let ino = std::fs::metadata(&fetched).unwrap().ino();
        std::fs::rename(
            &fetched,
            tmp.join(swapped_name(&path, ino, true, Some("A"))),
        )
        .unwrap();
        // Named for an inode no file has: what came out of the tree.
        let other = tmp.join(swapped_name(&RelPath::new("a.txt").unwrap(), 0, true, None));
        std::fs::write(&other, b"swapped out").unwrap();
        // Swapped out by a change that was no conflict, and what the index
        // holds there: a version of that change. The same but not what the
        // index holds (a person's change): a conflict copy.
        let replaced = RelPath::new("done/replaced.txt").unwrap();
        let version = tmp.join(swapped_name(&replaced, 0, true, Some("A")));
        std::fs::write(&version, b"replaced").unwrap();
        filetime::set_file_mtime(&version, when).unwrap();
        let changed = RelPath::new("changed.txt").unwrap();
        let person = tmp.join(swapped_name(&changed, 0, true, Some("A")));
        std::fs::write(&person, b"a person's change").unwrap();
        std::fs::write(tmp.join("0123.aside"), b"old name").unwrap();
        std::fs::write(tmp.join("7.part"), b"part").unwrap();

        let indexed = |p: &RelPath, f: &Path| {
            assert!(f.starts_with(&tmp), "{f:?}");
            // a.txt too: without a peer in its name (ours lost a conflict)
            // it is a conflict copy all the same.
            *p == done || *p == replaced || p.as_str() == "a.txt"
        };
        let mut kept = clear_temp(state.path(), "B", "parts-", &indexed);
        kept.sort();
        let conflicts = state.path().join("conflicts");
        let names: Vec<_> = kept
            .iter()
            .map(|k| k.strip_prefix(&conflicts).unwrap().display().to_string())
            .collect();
        let ids: Vec<_> = names
            .iter()
            .map(|n| crate::conflicts::parse_id(n).map(|(p, who)| (p.to_string(), who)))
            .collect();
        let by_b = |p: &str| Some((p.to_string(), "B".to_string()));
        assert_eq!(
            ids,
            [
                by_b("a.txt"),
                by_b("changed.txt"),
                None,
                by_b("notes/plan.txt")
            ],
            "{names:?}"
        );
        assert_eq!(names[2], "interrupted-delete-0123");
        assert_eq!(names[3], "notes/plan.conflict-20251203-070000-B.txt");
        assert_eq!(std::fs::read(&kept[0]).unwrap(), b"swapped out");
        assert_eq!(std::fs::read(&kept[1]).unwrap(), b"a person's change");
        assert_eq!(std::fs::read(&kept[2]).unwrap(), b"old name");
        assert_eq!(std::fs::read(&kept[3]).unwrap(), b"set aside");
        // The finished delete: a version replaced by its peer's change.
        let version = state
            .path()
            .join("versions/done/gone.version-20251203-070000-peer_A_2.txt");
        assert_eq!(std::fs::read(&version).unwrap(), b"deleted");
        let version = state
            .path()
            .join("versions/done/replaced.version-20251203-070000-A.txt");
        assert_eq!(std::fs::read(&version).unwrap(), b"replaced");
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "the temp folder is empty"
        );
    }
}
