//! `RelPath`, the one type through which a path from the network or from a
//! directory walk becomes a path on disk.
//!
//! Why: a path a peer sends is joined to the synced directory and written
//! to; one that escapes it, or lands in the node's `.tandem` state folder,
//! is a remote write anywhere. Checked, beyond "never panics":
//! - `RelPath::new` accepts exactly what the module's doc allows (written
//!   out again here from the doc: non-empty, relative, `/`-separated, no
//!   empty, `.` or `..` component, no NUL or backslash, at most 4096 bytes
//!   and 255 per name, not in `.tandem`), and deserialization agrees;
//! - an accepted path, joined to a root (`to_disk`), stays under the root,
//!   outside its `.tandem`, with exactly the path's own names as plain
//!   components, and comes back unchanged through `from_disk`;
//! - `parent`, `file_name` and `is_inside` agree with the string and with
//!   `std::path`; `Ord`, `Eq` and `Hash` agree with `str`'s (it is
//!   `Borrow<str>`);
//! - `from_disk` of any path under a root, non-UTF-8 included, gives a
//!   `RelPath` that names the same place, or a refusal.
//!
//! Input: a path, optionally followed by a 0xFF byte and a second path
//! (for `is_inside` and ordering).

#![no_main]

use std::ffi::OsStr;
use std::hash::{BuildHasher, RandomState};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use tandem_common::RelPath;
use tandem_common::codec;
use tandem_common::path::{MAX_COMPONENT_LEN, MAX_PATH_LEN, PathError, STATE_DIR_NAME};

const ROOTS: [&str; 3] = ["/srv/data", "/", "rel/root"];

fuzz_target!(|data: &[u8]| {
    let (a, b) = match data.iter().position(|&c| c == 0xff) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let p = check_new(&String::from_utf8_lossy(a));
    if let Some(b) = b {
        let q = check_new(&String::from_utf8_lossy(b));
        if let (Some(p), Some(q)) = (&p, &q) {
            check_pair(p, q);
            check_pair(q, p);
        }
    }
    for root in ROOTS {
        check_from_disk(Path::new(root), a);
    }
});

/// What the module's doc says a `RelPath` is.
fn allowed(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PATH_LEN
        && !s.starts_with('/')
        && !s.contains(['\0', '\\'])
        && s.split('/').enumerate().all(|(i, c)| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.len() <= MAX_COMPONENT_LEN
                && !(i == 0 && c == STATE_DIR_NAME)
        })
}

/// `RelPath::new(s)` against the doc, and everything an accepted path
/// promises.
fn check_new(s: &str) -> Option<RelPath> {
    let result = RelPath::new(s);
    assert_eq!(result.is_ok(), allowed(s), "{s:?}: {result:?}");
    let wire = codec::encode(&s).expect("a string encodes");
    let decoded = codec::decode::<RelPath>(&wire);
    match (&result, &decoded) {
        (Ok(p), Ok(d)) => assert_eq!(p, d),
        (Err(_), Err(codec::CodecError::Decode(_))) => {}
        _ => panic!("{s:?}: new gave {result:?}, decoding gave {decoded:?}"),
    }
    let p = result.ok()?;
    assert_eq!(p.as_str(), s);
    assert_eq!(p.to_string(), s);
    assert_eq!(format!("{p:?}"), format!("{s:?}"));

    let names: Vec<&str> = s.split('/').collect();
    for root in ROOTS.map(Path::new) {
        let disk = p.to_disk(root);
        assert!(disk.starts_with(root), "{disk:?} left {root:?}");
        assert!(
            !disk.starts_with(root.join(STATE_DIR_NAME)),
            "{disk:?} is in the state folder"
        );
        let under: Vec<Component> = disk.strip_prefix(root).unwrap().components().collect();
        assert_eq!(under.len(), names.len(), "{s:?} as {disk:?}");
        for (c, name) in under.iter().zip(&names) {
            assert_eq!(*c, Component::Normal(OsStr::new(name)), "{s:?} as {disk:?}");
        }
        assert_eq!(RelPath::from_disk(root, &disk).as_ref(), Ok(&p));
    }

    assert_eq!(p.file_name(), *names.last().unwrap());
    match p.parent() {
        None => assert_eq!(names.len(), 1, "{s:?} has a parent"),
        Some(parent) => {
            assert_eq!(
                RelPath::new(parent.as_str()).as_ref(),
                Ok(&parent),
                "{s:?}'s parent is not a valid path"
            );
            assert_eq!(format!("{parent}/{}", p.file_name()), s);
            assert!(p.is_inside(&parent));
            assert!(!parent.is_inside(&p));
        }
    }
    assert!(!p.is_inside(&p));
    let h = RandomState::new();
    assert_eq!(h.hash_one(&p), h.hash_one(s), "Hash differs from str's");
    Some(p)
}

/// `is_inside` and ordering against the strings and `std::path`.
fn check_pair(p: &RelPath, q: &RelPath) {
    let by_string = p.as_str().starts_with(&format!("{q}/"));
    assert_eq!(p.is_inside(q), by_string, "{p:?} inside {q:?}");
    let root = Path::new("/srv/data");
    let by_path = p.to_disk(root).starts_with(q.to_disk(root)) && p != q;
    assert_eq!(p.is_inside(q), by_path, "{p:?} inside {q:?}");
    assert_eq!(p.cmp(q), p.as_str().cmp(q.as_str()));
    assert_eq!(p == q, p.as_str() == q.as_str());
}

/// `from_disk` of `root` joined with arbitrary bytes.
fn check_from_disk(root: &Path, raw: &[u8]) {
    let full = root.join(OsStr::from_bytes(raw));
    match RelPath::from_disk(root, &full) {
        Ok(p) => {
            assert!(RelPath::new(p.as_str()).is_ok());
            assert_eq!(p.to_disk(root), full, "{p:?} names another place");
        }
        Err(PathError::NotUtf8(_)) => {
            assert!(std::str::from_utf8(raw).is_err(), "{raw:?} is UTF-8");
        }
        Err(_) => {}
    }
}
