//! The versions folder (`STATE/versions/`): what a node deleted or
//! overwrote because of a peer's change, kept there first (a rename, so it
//! costs no copy; a copy only when the state folder is on another file
//! system), for `tandem versions` and `tandem restore`.
//!
//! Copies are named like conflict copies (see [`crate::conflicts`]), with
//! `.version-` for `.conflict-` and the node whose change replaced the
//! version where a conflict copy names its author:
//! `versions/notes/plan.version-20261203-060000-B.txt` is a version of
//! `notes/plan.txt`, last modified 2026-12-03 06:00:00 UTC, that B's change
//! replaced. The file keeps that version's mtime; when it was kept is its
//! ctime (a rename sets it). The folder is the only record.
//!
//! Old versions are removed in the background: older than the age limit,
//! or the oldest first while all of them together are over the size limit
//! ([`plan_cleanup`] decides, [`clean`] does it).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tandem_common::RelPath;
use tandem_common::proto::{ApiError, KeptVersion};

/// The marker between a kept version's stem and its time.
pub const MARK: &str = ".version-";

/// At most this many versions are listed per node for one path.
pub const MAX_LISTED: usize = 1_000;

/// The versions folder of the state folder `state_dir`.
pub fn folder(state_dir: &Path) -> PathBuf {
    state_dir.join("versions")
}

/// How long versions are kept and how much room they may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Versions kept longer than this are removed.
    pub max_age: Duration,
    /// All versions together stay under this many bytes (the oldest go
    /// first); 0 keeps none at all.
    pub max_bytes: u64,
}

impl Retention {
    /// Whether anything is kept at all.
    pub fn keeps(&self) -> bool {
        self.max_bytes > 0 && !self.max_age.is_zero()
    }
}

/// Where the version of `path` (modified at `mtime_ns`) that `cause`'s
/// change replaced is kept under `dir`: a name not taken yet.
pub fn dest(dir: &Path, path: &RelPath, cause: &str, mtime_ns: i64) -> std::io::Result<PathBuf> {
    crate::conflicts::aside_dest_marked(dir, MARK, path, cause, mtime_ns)
}

/// Keeps what a peer's change replaces at one path: moves it into the
/// versions folder, or removes it when versions are not kept (or it
/// cannot be kept, which is logged).
#[derive(Debug, Clone)]
pub struct Keeper {
    /// The versions folder; `None`: versions are not kept.
    pub dir: Option<PathBuf>,
    /// A version larger than this is not kept (it could never fit).
    pub max_bytes: u64,
    /// The file it is a version of.
    pub path: RelPath,
    /// The node whose change replaced it.
    pub cause: String,
}

impl Keeper {
    /// Takes `src` (the replaced version, moved out of the tree) away:
    /// into the versions folder when they are kept. Returns where it is
    /// kept, if it is.
    pub fn keep(&self, src: &Path) -> Option<PathBuf> {
        let meta = std::fs::symlink_metadata(src).ok();
        let fits = meta.as_ref().is_some_and(|m| m.len() <= self.max_bytes);
        if let Some(dir) = self.dir.as_ref().filter(|_| fits) {
            let mtime = meta.as_ref().map(crate::scan::mtime_ns).unwrap_or(0);
            let put = || {
                dest(dir, &self.path, &self.cause, mtime)
                    .and_then(|d| crate::core::move_file(src, &d).map(|()| d))
            };
            // The cleanup may remove a folder just made for it: once more.
            let kept = match put() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => put(),
                r => r,
            };
            match kept {
                Ok(d) => {
                    tracing::debug!(
                        "kept the version of {} that {}'s change replaced as {}",
                        self.path,
                        self.cause,
                        d.display()
                    );
                    return Some(d);
                }
                Err(e) => tracing::warn!(
                    "cannot keep the version of {} that {}'s change replaced ({e}); it is removed",
                    self.path,
                    self.cause
                ),
            }
        }
        let _ = std::fs::remove_file(src);
        None
    }
}

/// The versions kept under `dir` of `path`, and of every file under it when
/// it is (or was) a folder, newest kept first (at most [`MAX_LISTED`]).
/// Nothing kept: none; a folder that cannot be read: an error.
pub fn of(dir: &Path, node: &str, path: &RelPath) -> std::io::Result<Vec<KeptVersion>> {
    let mut out = Vec::new();
    // The file's own versions sit beside where it would be.
    let parent = match path.parent() {
        Some(p) => p.to_disk(dir),
        None => dir.to_path_buf(),
    };
    let mut look = |at: &Path, depth: Option<usize>| -> std::io::Result<()> {
        if !at.is_dir() {
            return Ok(());
        }
        let mut walk = walkdir::WalkDir::new(at).follow_links(false).min_depth(1);
        if let Some(d) = depth {
            walk = walk.max_depth(d);
        }
        for e in walk {
            let e = e.map_err(std::io::Error::from)?;
            if !e.file_type().is_file() {
                continue;
            }
            let Ok(id) = RelPath::from_disk(dir, e.path()) else {
                continue;
            };
            let Some((of, cause)) = crate::conflicts::parse_id_marked(id.as_str(), MARK) else {
                continue;
            };
            if of != *path && !of.is_inside(path) {
                continue;
            }
            let meta = e.metadata().map_err(std::io::Error::from)?;
            out.push(KeptVersion {
                node: node.to_string(),
                id: id.as_str().to_string(),
                path: of,
                cause,
                size: meta.len(),
                mtime_ns: crate::scan::mtime_ns(&meta),
                kept_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            });
        }
        Ok(())
    };
    look(&parent, Some(1))?;
    look(&path.to_disk(dir), None)?;
    out.sort_by(|a, b| b.kept_ns.cmp(&a.kept_ns).then_with(|| a.id.cmp(&b.id)));
    out.truncate(MAX_LISTED);
    Ok(out)
}

/// The kept version `id` under `dir`, reached without following links.
pub fn locate(dir: &Path, node: &str, id: &str) -> Result<(PathBuf, RelPath), ApiError> {
    let missing = || ApiError::NoSuchVersion {
        node: node.to_string(),
        id: id.to_string(),
    };
    let at = crate::conflicts::find_file(dir, id).ok_or_else(missing)?;
    let (path, _) = crate::conflicts::parse_id_marked(id, MARK).ok_or_else(missing)?;
    Ok((at, path))
}

/// One kept version, for [`plan_cleanup`]: its size and when it was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Bytes.
    pub size: u64,
    /// When it was kept (ns).
    pub kept_ns: i64,
}

/// Which of `held` to remove at `now_ns` under `r`: those older than the
/// age limit, then the oldest of the rest until the total fits. Indexes
/// into `held`.
pub fn plan_cleanup(held: &[Held], now_ns: i64, r: Retention) -> Vec<usize> {
    let max_age = i64::try_from(r.max_age.as_nanos()).unwrap_or(i64::MAX);
    let mut order: Vec<usize> = (0..held.len()).collect();
    order.sort_by_key(|&i| held[i].kept_ns);
    let mut total: u64 = held.iter().map(|h| h.size).sum();
    let mut out = Vec::new();
    for i in order {
        let old = now_ns.saturating_sub(held[i].kept_ns) > max_age;
        if old || total > r.max_bytes || r.max_bytes == 0 {
            total -= held[i].size;
            out.push(i);
        }
    }
    out
}

/// Removes the versions under `dir` that `r` no longer keeps, and the
/// folders that leaves empty. Returns how many were removed.
pub fn clean(dir: &Path, r: Retention, now_ns: i64) -> usize {
    if !dir.is_dir() {
        return 0;
    }
    let mut files = Vec::new();
    let mut held = Vec::new();
    for e in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .min_depth(1)
        .into_iter()
        .flatten()
    {
        // Kept links go by age and size too (`metadata` here is the link's
        // own: the walk does not follow links).
        if !e.file_type().is_file() && !e.file_type().is_symlink() {
            continue;
        }
        let Ok(m) = e.metadata() else { continue };
        held.push(Held {
            size: m.len(),
            kept_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        });
        files.push(e.into_path());
    }
    let mut removed = 0;
    for i in plan_cleanup(&held, now_ns, r) {
        match std::fs::remove_file(&files[i]) {
            Ok(()) => {
                removed += 1;
                crate::conflicts::remove_empty_parents(dir, &files[i]);
            }
            Err(e) => tracing::warn!("cannot remove the old version {}: {e}", files[i].display()),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_764_741_600_000_000_000;
    const DAY: i64 = 86_400_000_000_000;

    #[test]
    fn retention_drops_old_ones_then_the_oldest_until_it_fits() {
        let held = [
            Held {
                size: 100,
                kept_ns: T - 40 * DAY,
            },
            Held {
                size: 300,
                kept_ns: T - 2 * DAY,
            },
            Held {
                size: 300,
                kept_ns: T - DAY,
            },
            Held {
                size: 300,
                kept_ns: T,
            },
        ];
        let month = Retention {
            max_age: Duration::from_secs(30 * 86_400),
            max_bytes: 1_000,
        };
        assert_eq!(plan_cleanup(&held, T, month), [0], "too old");
        let small = Retention {
            max_bytes: 650,
            ..month
        };
        assert_eq!(plan_cleanup(&held, T, small), [0, 1], "600 B fit");
        let none = Retention {
            max_bytes: 0,
            ..month
        };
        assert_eq!(plan_cleanup(&held, T, none).len(), 4);
        assert!(!none.keeps());
    }

    #[test]
    fn versions_of_a_file_and_of_a_folder_are_listed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let p = |s: &str| RelPath::new(s).unwrap();
        for (path, cause) in [
            ("notes/plan.txt", "B"),
            ("notes/plan.txt", "C"),
            ("notes/planb.txt", "B"),
            ("notes/deep/x.md", "B"),
            ("other.txt", "B"),
        ] {
            let at = dest(dir, &p(path), cause, T).unwrap();
            std::fs::write(&at, path).unwrap();
        }
        let ids = |path: &str| -> Vec<(String, String)> {
            let mut v: Vec<_> = of(dir, "A", &p(path))
                .unwrap()
                .into_iter()
                .map(|k| (k.path.to_string(), k.cause))
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            ids("notes/plan.txt"),
            [
                ("notes/plan.txt".into(), "B".into()),
                ("notes/plan.txt".into(), "C".into())
            ]
        );
        assert_eq!(ids("notes").len(), 4);
        assert_eq!(ids("notes/deep"), [("notes/deep/x.md".into(), "B".into())]);
        assert!(ids("nothing/here.txt").is_empty());
        let one = &of(dir, "A", &p("other.txt")).unwrap()[0];
        let (at, path) = locate(dir, "A", &one.id).unwrap();
        assert_eq!(
            (path, std::fs::read(at).unwrap()),
            (p("other.txt"), b"other.txt".to_vec())
        );
        assert!(matches!(
            locate(dir, "A", "../x"),
            Err(ApiError::NoSuchVersion { .. })
        ));

        let removed = clean(
            dir,
            Retention {
                max_age: Duration::from_secs(3600),
                max_bytes: 0,
            },
            T,
        );
        assert_eq!(removed, 5);
        assert!(!dir.join("notes").exists(), "emptied folders go");
    }
}
