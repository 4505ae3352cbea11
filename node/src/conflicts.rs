//! The conflicts folder (`STATE/conflicts/`): where losing versions are
//! kept, how their names say what they are, and listing and discarding
//! them. Putting a copy back in the tree is a local change and belongs to
//! the core (`core::local`), which uses the naming here.
//!
//! A kept copy of `notes/plan.txt` by node B, last modified 2026-12-03
//! 06:00:00 UTC, is `conflicts/notes/plan.conflict-20261203-060000-B.txt`
//! (`~2`, `~3`… before the extension when that name is taken; copies kept
//! before 2026-12 used `-2`, which reads as part of the author). The name is
//! the only record: the folder is the truth, so copies kept by older
//! versions, or moved there by hand, are listed like the others.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tandem_common::RelPath;
use tandem_common::proto::{ApiError, ConflictCopy, MAX_MESH_READ, OpenedCopy};

/// At most this many copies are listed per node (a folder nobody cleans
/// can hold any number; the oldest beyond this are counted, not listed),
/// which keeps an answer of the whole cluster well under a frame.
pub const MAX_LISTED: usize = 1_000;

/// The conflicts folder of the state folder `state_dir`.
pub fn folder(state_dir: &Path) -> PathBuf {
    state_dir.join("conflicts")
}

/// The marker between a kept copy's stem and its time.
const MARK: &str = ".conflict-";

/// Where a copy of `path` by `author`, modified at `mtime_ns`, is kept
/// under `dir` (the conflicts folder): a name not taken yet. Creates the
/// folders it needs.
pub fn aside_dest(
    dir: &Path,
    path: &RelPath,
    author: &str,
    mtime_ns: i64,
) -> std::io::Result<PathBuf> {
    aside_dest_marked(dir, MARK, path, author, mtime_ns)
}

/// [`aside_dest`] with another marker than `.conflict-` (the versions
/// folder names its copies the same way; see [`crate::versions`]).
pub fn aside_dest_marked(
    dir: &Path,
    mark: &str,
    path: &RelPath,
    author: &str,
    mtime_ns: i64,
) -> std::io::Result<PathBuf> {
    let when =
        chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(mtime_ns).format("%Y%m%d-%H%M%S");
    let rel = path.as_str();
    let (folder, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let (stem, ext) = split_ext(name);
    let safe_author: String = author
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let base = dir.join(folder);
    std::fs::create_dir_all(&base)?;
    let mut dest = base.join(format!("{stem}{mark}{when}-{safe_author}{ext}"));
    let mut n = 1;
    while dest.symlink_metadata().is_ok() {
        n += 1;
        // `~` never occurs in an author (see above), so it parses back.
        dest = base.join(format!("{stem}{mark}{when}-{safe_author}~{n}{ext}"));
    }
    Ok(dest)
}

/// `("plan", ".txt")`; a leading dot is part of the stem (`.bashrc`).
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    }
}

/// What a kept copy's id says: the file it is a version of and the author.
/// `None` when the name does not follow the pattern (see the module doc).
pub fn parse_id(id: &str) -> Option<(RelPath, String)> {
    parse_id_marked(id, MARK)
}

/// [`parse_id`] with another marker (see [`aside_dest_marked`]).
pub fn parse_id_marked(id: &str, mark: &str) -> Option<(RelPath, String)> {
    let (folder, name) = match id.rsplit_once('/') {
        Some((f, n)) => (Some(f), n),
        None => (None, id),
    };
    // A marker followed by a time, where the name without it splits into
    // the same stem and extension (`aside_dest` made it so); of several,
    // the last: a stem may contain a marker itself (a copy of a copy).
    let (stem, author, ext) = name
        .match_indices(mark)
        .filter_map(|(i, _)| {
            let (stem, rest) = (&name[..i], &name[i + mark.len()..]);
            if stem.is_empty() || !is_time(rest) {
                return None;
            }
            let rest = &rest[16..];
            // The author has no dots, so the extension starts at the first.
            let (author, ext) = match rest.find('.') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            let whole = format!("{stem}{ext}");
            (!author.is_empty() && split_ext(&whole) == (stem, ext)).then_some((stem, author, ext))
        })
        .last()?;
    // A taken name's number (`~2`) is not part of the author.
    let author = match author.rsplit_once('~') {
        Some((a, n)) if !a.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => a,
        _ => author,
    };
    let file = format!("{stem}{ext}");
    let path = match folder {
        Some(f) => format!("{f}/{file}"),
        None => file,
    };
    Some((RelPath::new(path).ok()?, author.to_string()))
}

/// `YYYYMMDD-HHMMSS-` at the start of `s`.
fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'-'
}

/// The newest [`MAX_LISTED`] copies kept under `dir`, newest first, and
/// how many there are in all. A folder that does not exist holds none; one
/// that cannot be read is an error (never "none").
pub fn list(dir: &Path, node: &str) -> std::io::Result<(Vec<ConflictCopy>, u64)> {
    if !dir.exists() {
        return Ok((Vec::new(), 0));
    }
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).follow_links(false).min_depth(1) {
        let e = e.map_err(std::io::Error::from)?;
        // A copy on its way in (across file systems) is not one yet.
        if !e.file_type().is_file()
            || e.file_name()
                .to_string_lossy()
                .starts_with(crate::scan::TEMP_PREFIX)
        {
            continue;
        }
        let Ok(rel) = RelPath::from_disk(dir, e.path()) else {
            continue;
        };
        let meta = e.metadata().map_err(std::io::Error::from)?;
        out.push(describe(node, rel.as_str(), &meta));
    }
    out.sort_by(|a, b| b.kept_ns.cmp(&a.kept_ns).then_with(|| a.id.cmp(&b.id)));
    let total = out.len() as u64;
    out.truncate(MAX_LISTED);
    Ok((out, total))
}

/// The copy `id` as listed, from its metadata.
fn describe(node: &str, id: &str, meta: &std::fs::Metadata) -> ConflictCopy {
    let (path, author) = match parse_id(id) {
        Some((p, a)) => (Some(p), a),
        None => (None, String::new()),
    };
    ConflictCopy {
        node: node.to_string(),
        id: id.to_string(),
        path,
        author,
        size: meta.len(),
        mtime_ns: crate::scan::mtime_ns(meta),
        // Moving a file in changes its ctime: that is when it was kept.
        kept_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
    }
}

/// Opens the kept copy `id` for reading, never through a link (the last
/// component is opened with `O_NOFOLLOW`, the others were checked by
/// [`locate`]).
fn open(dir: &Path, node: &str, id: &str) -> Result<(std::fs::File, std::fs::Metadata), ApiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let at = locate(dir, node, id)?;
    let unreadable =
        |e: std::io::Error| ApiError::Other(format!("cannot read the conflict copy {id}: {e}"));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&at)
        .map_err(unreadable)?;
    let meta = f.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(ApiError::NoSuchConflict {
            node: node.to_string(),
            id: id.to_string(),
        });
    }
    Ok((f, meta))
}

/// The kept copy `id` as listed, with the hash of its content (read
/// whole), for a fetch.
pub fn opened(dir: &Path, node: &str, id: &str) -> Result<OpenedCopy, ApiError> {
    let (f, meta) = open(dir, node, id)?;
    let hashed = tandem_common::hashing::hash_reader(f)
        .map_err(|e| ApiError::Other(format!("cannot read the conflict copy {id}: {e}")))?;
    let mut copy = describe(node, id, &meta);
    // What was hashed is what will be sent; a copy that grew meanwhile is
    // caught by the hash at the end of the fetch.
    copy.size = hashed.size;
    Ok(OpenedCopy {
        copy,
        hash: hashed.hash,
    })
}

/// Up to `len` bytes (at most [`MAX_MESH_READ`]) of the kept copy `id`
/// from `offset`; fewer only at its end.
pub fn read(dir: &Path, node: &str, id: &str, offset: u64, len: u32) -> Result<Vec<u8>, ApiError> {
    use std::os::unix::fs::FileExt;
    let (f, meta) = open(dir, node, id)?;
    // Past the end (or past what an offset can be): nothing, not an error.
    let left = meta.len().saturating_sub(offset);
    let mut buf = vec![0u8; left.min(u64::from(len.min(MAX_MESH_READ))) as usize];
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], offset.saturating_add(got as u64)) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(ApiError::Other(format!(
                    "cannot read the conflict copy {id}: {e}"
                )));
            }
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The kept copy `id` under `dir`: a regular file reached without
/// following links, or why not.
pub fn locate(dir: &Path, node: &str, id: &str) -> Result<PathBuf, ApiError> {
    find_file(dir, id).ok_or_else(|| ApiError::NoSuchConflict {
        node: node.to_string(),
        id: id.to_string(),
    })
}

/// The regular file `id` (a relative path, as sent over the network)
/// under `dir`, reached without following any link.
pub fn find_file(dir: &Path, id: &str) -> Option<PathBuf> {
    let rel = RelPath::new(id).ok()?;
    let mut at = dir.to_path_buf();
    for part in rel.as_str().split('/') {
        at.push(part);
        if at.symlink_metadata().ok()?.file_type().is_symlink() {
            return None;
        }
    }
    at.symlink_metadata().ok()?.is_file().then_some(at)
}

/// Deletes the kept copy `id` and the folders it leaves empty.
pub fn discard(dir: &Path, node: &str, id: &str) -> Result<(), ApiError> {
    let at = locate(dir, node, id)?;
    std::fs::remove_file(&at).map_err(|e| {
        ApiError::Other(format!(
            "cannot delete the conflict copy {}: {e}",
            at.display()
        ))
    })?;
    remove_empty_parents(dir, &at);
    Ok(())
}

/// Removes the folders between `file` and `dir` that are empty now.
pub fn remove_empty_parents(dir: &Path, file: &Path) {
    let mut p = file.parent();
    while let Some(d) = p {
        if d == dir || !d.starts_with(dir) || std::fs::remove_dir(d).is_err() {
            break;
        }
        p = d.parent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_764_741_600_000_000_000; // 2025-12-03 06:00:00 UTC

    fn name_of(p: &Path, dir: &Path) -> String {
        p.strip_prefix(dir).unwrap().to_str().unwrap().to_string()
    }

    #[test]
    fn names_say_what_they_keep_and_parse_back() {
        let d = tempfile::tempdir().unwrap();
        for (path, author) in [
            ("notes/plan.txt", "B"),
            ("plan", "node-2"),
            (".bashrc", "A"),
            ("a/b/archive.tar.gz", "a b"),
            ("x.conflict-20251203-060000-B.txt", "C"),
            ("ünï/名前.txt", "ß"),
            ("Makefile.conflict-20251203-060000-B", "C"),
            ("a.b.conflict-20251203-060000-B.c", "node-2"),
        ] {
            let rel = RelPath::new(path).unwrap();
            let dest = aside_dest(d.path(), &rel, author, T).unwrap();
            let id = name_of(&dest, d.path());
            let (back, who) = parse_id(&id).unwrap_or_else(|| panic!("{id} parses"));
            assert_eq!(back, rel, "{id}");
            assert_eq!(who, author.replace(' ', "_"), "{id}");
        }
    }

    #[test]
    fn a_taken_name_gets_a_number_and_still_parses() {
        let d = tempfile::tempdir().unwrap();
        let rel = RelPath::new("plan.txt").unwrap();
        let first = aside_dest(d.path(), &rel, "B", T).unwrap();
        std::fs::write(&first, "1").unwrap();
        let second = aside_dest(d.path(), &rel, "B", T).unwrap();
        assert_eq!(
            name_of(&second, d.path()),
            "plan.conflict-20251203-060000-B~2.txt"
        );
        assert_eq!(
            parse_id(&name_of(&second, d.path())).unwrap(),
            (rel, "B".to_string())
        );
        // Copies kept before the `~` numbering still parse (the number
        // then reads as part of the author).
        assert_eq!(
            parse_id("plan.conflict-20251203-060000-B-2.txt").unwrap().1,
            "B-2"
        );
    }

    #[test]
    fn other_names_are_not_taken_for_copies() {
        for id in [
            "interrupted-delete-x.tmp",
            "plan.txt",
            ".conflict-20251203-060000-B.txt",
            "plan.conflict-2025-B.txt",
            "plan.conflict-20251203-060000-.txt",
        ] {
            assert!(parse_id(id).is_none(), "{id}");
        }
    }

    #[test]
    fn list_locate_and_discard() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("conflicts");
        assert_eq!(list(&dir, "A").unwrap(), (Vec::new(), 0), "no folder: none");
        let rel = RelPath::new("deep/er/plan.txt").unwrap();
        let kept = aside_dest(&dir, &rel, "B", T).unwrap();
        std::fs::write(&kept, "lost").unwrap();
        std::fs::write(dir.join("interrupted-delete-x"), "?").unwrap();
        let (all, total) = list(&dir, "A").unwrap();
        assert_eq!((all.len(), total), (2, 2));
        let copy = all.iter().find(|c| c.path.is_some()).unwrap();
        assert_eq!(copy.path.as_ref(), Some(&rel));
        assert_eq!(
            (copy.size, copy.author.as_str(), copy.node.as_str()),
            (4, "B", "A")
        );
        let odd = all.iter().find(|c| c.path.is_none()).unwrap();
        assert_eq!(odd.id, "interrupted-delete-x");

        for bad in ["../x", "/etc/passwd", "deep", "nothing-here"] {
            assert!(
                matches!(locate(&dir, "A", bad), Err(ApiError::NoSuchConflict { .. })),
                "{bad}"
            );
        }
        std::os::unix::fs::symlink(&kept, dir.join("link")).unwrap();
        assert!(locate(&dir, "A", "link").is_err(), "a link is not followed");

        discard(&dir, "A", &copy.id).unwrap();
        assert!(!kept.exists());
        assert!(!dir.join("deep").exists(), "emptied folders go too");
        assert!(dir.exists(), "the conflicts folder itself stays");
        assert!(matches!(
            discard(&dir, "A", &copy.id),
            Err(ApiError::NoSuchConflict { .. })
        ));
    }

    #[test]
    fn a_copy_is_read_in_pieces_never_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("conflicts");
        let rel = RelPath::new("notes/plan.txt").unwrap();
        let kept = aside_dest(&dir, &rel, "B", T).unwrap();
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&kept, &data).unwrap();
        let id = name_of(&kept, &dir);

        let o = opened(&dir, "A", &id).unwrap();
        assert_eq!(o.hash, tandem_common::ContentHash::of(&data));
        assert_eq!((o.copy.size, o.copy.node.as_str()), (3000, "A"));
        assert_eq!(o.copy.path.as_ref(), Some(&rel));
        assert_eq!(read(&dir, "A", &id, 1000, 1000).unwrap(), &data[1000..2000]);
        assert_eq!(read(&dir, "A", &id, 2500, 1000).unwrap(), &data[2500..]);
        assert!(read(&dir, "A", &id, 5000, 10).unwrap().is_empty());
        assert!(read(&dir, "A", &id, u64::MAX, u32::MAX).unwrap().is_empty());

        std::os::unix::fs::symlink(&kept, dir.join("notes/link")).unwrap();
        for bad in ["notes/link", "../conflicts/notes", "notes"] {
            assert!(
                matches!(opened(&dir, "A", bad), Err(ApiError::NoSuchConflict { .. })),
                "{bad}"
            );
            assert!(read(&dir, "A", bad, 0, 10).is_err(), "{bad}");
        }
    }
}
