//! `RelPath`: the one type through which a path from the network (or from a
//! directory walk) becomes a path on disk.
//!
//! A `RelPath` is relative, `/`-separated, UTF-8, has no empty, `.` or `..`
//! components, no NUL or backslash, and never points into the node's own
//! state folder (`.tandem`). Deserialization validates, so a hostile peer
//! cannot smuggle an unchecked path inside any message.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Name of the per-node state folder inside the synced directory. Never
/// scanned, listed or sent.
pub const STATE_DIR_NAME: &str = ".tandem";

/// Longest accepted path, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest accepted single component, in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is the empty string.
    #[error("path is empty")]
    Empty,
    /// The path starts with `/`.
    #[error("path {0:?} is absolute; only paths relative to the synced directory are allowed")]
    Absolute(String),
    /// A component is `..`.
    #[error("path {0:?} contains '..' and would leave the synced directory")]
    ParentDir(String),
    /// A component is `.`.
    #[error("path {0:?} contains a '.' component")]
    CurDir(String),
    /// Two slashes in a row, or a trailing slash.
    #[error("path {0:?} has an empty component (double or trailing '/')")]
    EmptyComponent(String),
    /// A NUL byte.
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
    /// A backslash, which other systems read as a separator.
    #[error("path {0:?} contains a backslash")]
    Backslash(String),
    /// Inside the node's state folder.
    #[error("path {0:?} is inside the node's state folder '{STATE_DIR_NAME}'")]
    StateDir(String),
    /// Longer than the platform allows.
    #[error(
        "path is too long ({0} bytes; the limit is {MAX_PATH_LEN}, {MAX_COMPONENT_LEN} per name)"
    )]
    TooLong(usize),
    /// A name on disk that is not valid UTF-8.
    #[error("name {0:?} is not valid UTF-8")]
    NotUtf8(PathBuf),
    /// A disk path outside the root it was resolved against.
    #[error("{0:?} is not inside the synced directory")]
    OutsideRoot(PathBuf),
}

/// A validated path relative to a node's synced directory.
///
/// Shared, not copied: the index keeps a path under several keys (by name,
/// by sequence, by block), and a clone is a reference count, not a string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct RelPath(Arc<str>);

impl RelPath {
    /// Validates `s` and wraps it.
    pub fn new(s: impl AsRef<str>) -> Result<Self, PathError> {
        let s = s.as_ref();
        validate(s)?;
        // One allocation: an `Arc<str>` copies even an owned string.
        Ok(RelPath(s.into()))
    }

    /// Whether `s` would make a valid `RelPath` (checked without keeping
    /// a copy of it).
    pub fn check(s: &str) -> Result<(), PathError> {
        validate(s)
    }

    /// The path as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path on disk under `root`.
    pub fn to_disk(&self, root: &Path) -> PathBuf {
        root.join(&*self.0)
    }

    /// Turns `full` (a path under `root`, as a walker or watcher reports it)
    /// into a `RelPath`, refusing non-UTF-8 names and the state folder.
    pub fn from_disk(root: &Path, full: &Path) -> Result<Self, PathError> {
        let rel = full
            .strip_prefix(root)
            .map_err(|_| PathError::OutsideRoot(full.to_path_buf()))?;
        let mut out = String::with_capacity(rel.as_os_str().len());
        for comp in rel.components() {
            match comp {
                Component::Normal(name) => {
                    let name = name
                        .to_str()
                        .ok_or_else(|| PathError::NotUtf8(full.to_path_buf()))?;
                    if !out.is_empty() {
                        out.push('/');
                    }
                    out.push_str(name);
                }
                _ => return Err(PathError::OutsideRoot(full.to_path_buf())),
            }
        }
        RelPath::new(out)
    }

    /// The parent directory, or `None` at the top level.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rfind('/').map(|i| RelPath(self.0[..i].into()))
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// True if `self` is strictly inside the directory `dir`.
    pub fn is_inside(&self, dir: &RelPath) -> bool {
        self.0.len() > dir.0.len()
            && self.0.starts_with(&*dir.0)
            && self.0.as_bytes()[dir.0.len()] == b'/'
    }
}

fn validate(s: &str) -> Result<(), PathError> {
    if s.is_empty() {
        return Err(PathError::Empty);
    }
    if s.contains('\0') {
        return Err(PathError::Nul(s.to_string()));
    }
    if s.starts_with('/') {
        return Err(PathError::Absolute(s.to_string()));
    }
    if s.contains('\\') {
        return Err(PathError::Backslash(s.to_string()));
    }
    if s.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong(s.len()));
    }
    for (i, comp) in s.split('/').enumerate() {
        match comp {
            "" => return Err(PathError::EmptyComponent(s.to_string())),
            "." => return Err(PathError::CurDir(s.to_string())),
            ".." => return Err(PathError::ParentDir(s.to_string())),
            STATE_DIR_NAME if i == 0 => return Err(PathError::StateDir(s.to_string())),
            c if c.len() > MAX_COMPONENT_LEN => return Err(PathError::TooLong(c.len())),
            _ => {}
        }
    }
    Ok(())
}

impl TryFrom<String> for RelPath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, PathError> {
        RelPath::new(s)
    }
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0.to_string()
    }
}

impl Serialize for RelPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

// Ord, Eq and Hash are derived from the inner str, so they agree with str's.
impl std::borrow::Borrow<str> for RelPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for ok in [
            "a",
            "a/b/c.txt",
            ".hidden",
            "dir/.tandem",
            "..a",
            "a..",
            "...",
            "spaces in name",
            "ünïcödé/日本",
        ] {
            assert!(RelPath::new(ok).is_ok(), "{ok:?} should be accepted");
        }
    }

    #[test]
    fn refuses_hostile_paths() {
        type Check = fn(&PathError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, PathError::Empty)),
            ("/etc/passwd", |e| matches!(e, PathError::Absolute(_))),
            ("..", |e| matches!(e, PathError::ParentDir(_))),
            ("../x", |e| matches!(e, PathError::ParentDir(_))),
            ("a/../../x", |e| matches!(e, PathError::ParentDir(_))),
            ("a/..", |e| matches!(e, PathError::ParentDir(_))),
            ("./a", |e| matches!(e, PathError::CurDir(_))),
            ("a//b", |e| matches!(e, PathError::EmptyComponent(_))),
            ("a/", |e| matches!(e, PathError::EmptyComponent(_))),
            ("a\0b", |e| matches!(e, PathError::Nul(_))),
            ("..\\..\\x", |e| matches!(e, PathError::Backslash(_))),
            (".tandem", |e| matches!(e, PathError::StateDir(_))),
            (".tandem/index.db", |e| matches!(e, PathError::StateDir(_))),
        ];
        for (bad, check) in cases {
            let err = RelPath::new(*bad).expect_err(bad);
            assert!(check(&err), "{bad:?} refused with the wrong reason: {err}");
        }
        assert!(matches!(
            RelPath::new("x".repeat(256)),
            Err(PathError::TooLong(256))
        ));
        assert!(matches!(
            RelPath::new("a/".repeat(2100) + "a"),
            Err(PathError::TooLong(_))
        ));
    }

    #[test]
    fn from_disk_maps_and_refuses() {
        let root = Path::new("/srv/data");
        assert_eq!(
            RelPath::from_disk(root, Path::new("/srv/data/a/b")).unwrap(),
            RelPath::new("a/b").unwrap()
        );
        assert!(RelPath::from_disk(root, Path::new("/srv/other")).is_err());
        assert!(RelPath::from_disk(root, Path::new("/srv/data/.tandem/x")).is_err());
        assert!(RelPath::from_disk(root, Path::new("/srv/data")).is_err());
        use std::os::unix::ffi::OsStrExt;
        let bad = Path::new(std::ffi::OsStr::from_bytes(b"/srv/data/\xff.txt"));
        assert!(matches!(
            RelPath::from_disk(root, bad),
            Err(PathError::NotUtf8(_))
        ));
    }

    #[test]
    fn inside_and_parent() {
        let a = RelPath::new("a").unwrap();
        assert!(RelPath::new("a/b").unwrap().is_inside(&a));
        assert!(!RelPath::new("ab").unwrap().is_inside(&a));
        assert!(!a.is_inside(&a));
        assert_eq!(
            RelPath::new("a/b/c").unwrap().parent().unwrap().as_str(),
            "a/b"
        );
        assert_eq!(a.parent(), None);
        assert_eq!(RelPath::new("a/b/c").unwrap().file_name(), "c");
    }

    proptest::proptest! {
        #[test]
        fn validated_paths_stay_inside(s in "[a-z./\\\\]{0,12}") {
            if let Ok(p) = RelPath::new(s.clone()) {
                let joined = p.to_disk(Path::new("/root"));
                proptest::prop_assert!(joined.starts_with("/root"));
                for c in joined.strip_prefix("/root").unwrap().components() {
                    proptest::prop_assert!(matches!(c, Component::Normal(_)));
                }
            }
        }
    }
}
