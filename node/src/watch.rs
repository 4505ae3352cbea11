//! The filesystem watcher: `notify` (inotify) events become hints for the
//! core, which re-stats the named paths. Events are hints, never facts: the
//! core always looks at the disk before deciding anything.
//!
//! A writer closing a file, a rename or a delete is acted on at once; a
//! create or a write without a close waits until the file stops changing.
//! A queue overflow asks for a full rescan.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

/// A path the watcher saw change.
#[derive(Debug, Clone)]
pub struct Hint {
    /// Absolute path.
    pub path: PathBuf,
    /// True when a writer may still be busy with it (wait for it to settle).
    pub settle: bool,
}

/// What the watcher tells the core.
#[derive(Debug)]
pub enum WatchMsg {
    /// Look at these paths again.
    Paths(Vec<Hint>),
    /// Events were lost: rescan everything.
    Rescan,
    /// A folder could not be watched (the inotify watch limit): rescan
    /// everything, and keep rescanning periodically.
    Unwatched(String),
}

/// Starts watching `root` recursively; hints go to `tx` as `wrap(msg)`.
/// Events inside `skip` (the state folder) are dropped. When the inotify
/// watch limit or an unreadable folder stops it part of the way, the
/// watcher is still returned (what it watches keeps working), with why
/// some folders are not watched.
pub fn start<M: Send + 'static>(
    root: &Path,
    skip: &Path,
    tx: Sender<M>,
    wrap: fn(WatchMsg) -> M,
) -> notify::Result<(RecommendedWatcher, Option<String>)> {
    let skip = skip.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let msg = match res {
            Ok(ev) if ev.need_rescan() => WatchMsg::Rescan,
            Ok(ev) => {
                let settle = match ev.kind {
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => false,
                    EventKind::Access(_) => return,
                    EventKind::Create(CreateKind::Folder) => false,
                    EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_)) => true,
                    EventKind::Modify(ModifyKind::Any) => true,
                    _ => false,
                };
                let paths: Vec<Hint> = ev
                    .paths
                    .into_iter()
                    .filter(|p| !p.starts_with(&skip))
                    .map(|path| Hint { path, settle })
                    .collect();
                if paths.is_empty() {
                    return;
                }
                WatchMsg::Paths(paths)
            }
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                WatchMsg::Unwatched(format!("the inotify watch limit is reached ({e})"))
            }
            Err(e) => {
                tracing::warn!("file watcher error: {e}; rescanning");
                WatchMsg::Rescan
            }
        };
        // The core has stopped: nothing left to tell.
        let _ = tx.send(wrap(msg));
    })?;
    match watcher.watch(root, RecursiveMode::Recursive) {
        Ok(()) => Ok((watcher, None)),
        Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => Ok((
            watcher,
            Some(format!("the inotify watch limit is reached ({e})")),
        )),
        // A folder that cannot be read (or vanished meanwhile) stops the
        // recursive watch part of the way: keep what is watched and rescan
        // the rest periodically, rather than refuse to start.
        Err(e) => Ok((watcher, Some(format!("cannot watch every folder ({e})")))),
    }
}
