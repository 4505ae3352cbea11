//! The filesystem watcher: `notify` (inotify) events become hints for the
//! core, which re-stats the named paths. Events are hints, never facts: the
//! core always looks at the disk before deciding anything.
//!
//! A writer closing a file, a rename or a delete is acted on at once; a
//! create or a write without a close waits until the file stops changing.
//! A queue overflow asks for a full rescan.
//!
//! Every folder is watched on its own (not one recursive watch), so that
//! folders the ignore patterns exclude get no inotify watch at all (a
//! `node_modules` can hold more folders than the watch limit allows). A
//! thread of its own adds the watches of folders that appear (made, or
//! renamed in) and then hints the folder to the core once more, so
//! whatever was made in it before its watch existed is still found; it
//! also follows changes of the ignore patterns ([`WatchControl::rewatch`]).
//! A folder's watch is added before what is in it is listed: at start in
//! one pass that is also the first scan's listing ([`start`]); for a folder
//! that appears later, the listing is repeated until it finds no folder
//! without one, so a tree unpacked quickly (`tar x`, `git clone`) ends up
//! watched throughout.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};

use notify::event::{
    AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind, RenameMode,
};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tandem_common::RelPath;

use crate::ignores::SharedIgnores;

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

/// What the watch thread is asked to do.
enum Ctl {
    /// Something appeared at this path (made or renamed in): if it is a
    /// folder, watch it and what is under it.
    Appeared(PathBuf),
    /// The folder at this path is gone: forget its watches.
    Gone(PathBuf),
    /// The ignore patterns changed: watch exactly what is not ignored.
    Rewatch,
    Stop,
}

/// The running watcher; dropping it stops it.
pub struct Watch {
    ctl: Sender<Ctl>,
}

impl Watch {
    /// A handle the core keeps to have new ignore patterns followed.
    pub fn control(&self) -> WatchControl {
        WatchControl(self.ctl.clone())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.ctl.send(Ctl::Stop);
    }
}

/// Lets the core ask the watcher to follow new ignore patterns.
#[derive(Clone)]
pub struct WatchControl(Sender<Ctl>);

impl WatchControl {
    /// The ignore patterns changed (the core put new ones in force): stop
    /// watching folders now ignored, watch those no longer ignored.
    pub fn rewatch(&self) {
        let _ = self.0.send(Ctl::Rewatch);
    }
}

/// Why a folder could not be watched.
enum Unwatchable {
    /// The inotify watch limit: every further watch fails too.
    Limit(String),
    /// This folder only.
    Other(String),
}

/// The folders being watched and how to watch more.
struct Watched<M> {
    watcher: RecommendedWatcher,
    dirs: BTreeSet<PathBuf>,
    root: PathBuf,
    skip: PathBuf,
    ignores: SharedIgnores,
    tx: Sender<M>,
    wrap: fn(WatchMsg) -> M,
    /// The last reason reported for not watching everything (reported
    /// once, not for every folder made while at the limit).
    told: Option<String>,
}

impl<M: Send + 'static> Watched<M> {
    /// The folders at and under `top` that should be watched (not ignored,
    /// not the state folder), and why some could not be looked into.
    fn wanted_under(&self, top: &Path) -> (Vec<PathBuf>, Option<String>) {
        let ignores = self.ignores.get();
        let root = &self.root;
        let skip = &self.skip;
        let mut dirs = Vec::new();
        let mut why = None;
        let walk = walkdir::WalkDir::new(top)
            .follow_links(false)
            .follow_root_links(false)
            .into_iter()
            .filter_entry(|e| {
                e.file_type().is_dir()
                    && e.path() != skip
                    && !RelPath::from_disk(root, e.path())
                        .is_ok_and(|rel| ignores.is_ignored(&rel, true))
            });
        for e in walk {
            match e {
                Ok(e) => dirs.push(e.into_path()),
                // Vanished meanwhile: nothing to watch there.
                Err(e)
                    if e.io_error()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) => {}
                Err(e) => {
                    why.get_or_insert(format!("cannot watch every folder ({e})"));
                }
            }
        }
        (dirs, why)
    }

    /// Watches `dirs`. Returns why some could not be watched, if any could
    /// not: the watch limit stops at once (every further one would fail).
    fn add(&mut self, dirs: Vec<PathBuf>) -> Option<String> {
        let mut why = None;
        for d in dirs {
            match self.add_one(d) {
                Ok(()) => {}
                Err(Unwatchable::Limit(w)) => return Some(w),
                Err(Unwatchable::Other(w)) => {
                    why.get_or_insert(w);
                }
            }
        }
        why
    }

    /// Watches the folder `d` (gone meanwhile: nothing to watch).
    fn add_one(&mut self, d: PathBuf) -> Result<(), Unwatchable> {
        match self.watcher.watch(&d, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.dirs.insert(d);
                Ok(())
            }
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => Err(
                Unwatchable::Limit(format!("the inotify watch limit is reached ({e})")),
            ),
            Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => Ok(()),
            Err(e) => Err(Unwatchable::Other(format!(
                "cannot watch every folder ({e})"
            ))),
        }
    }

    fn unwatched(&mut self, why: String) {
        if self.told.as_ref() == Some(&why) {
            return;
        }
        self.told = Some(why.clone());
        let _ = self.tx.send((self.wrap)(WatchMsg::Unwatched(why)));
    }

    /// Watches `top` and every folder under it that should be: each watch
    /// is added before the folder is listed again, until a listing finds
    /// nothing new (bounded: a tree that keeps growing is left to the
    /// hint that follows and the periodic check). Returns why some could
    /// not be watched.
    fn add_tree(&mut self, top: &Path) -> Option<String> {
        for _ in 0..8 {
            let (dirs, unreadable) = self.wanted_under(top);
            let new: Vec<PathBuf> = dirs
                .into_iter()
                .filter(|d| !self.dirs.contains(d))
                .collect();
            if new.is_empty() {
                return unreadable;
            }
            if let Some(why) = self.add(new).or(unreadable) {
                return Some(why);
            }
        }
        None
    }

    /// Forgets the watches at and under `p` (the folder went, or is new:
    /// a watch of the same name may belong to an older folder).
    fn forget(&mut self, p: &Path) {
        let under: Vec<PathBuf> = self
            .dirs
            .range(p.to_path_buf()..)
            .take_while(|d| d.starts_with(p))
            .cloned()
            .collect();
        for d in under {
            self.dirs.remove(&d);
        }
    }

    fn run(mut self, ctl: mpsc::Receiver<Ctl>) {
        while let Ok(c) = ctl.recv() {
            match c {
                Ctl::Stop => return,
                Ctl::Appeared(p) => {
                    // A link to a folder is not a folder here: never watched.
                    let is_dir = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
                    if !is_dir || !p.starts_with(&self.root) || p.starts_with(&self.skip) {
                        continue;
                    }
                    let ignored = RelPath::from_disk(&self.root, &p)
                        .is_ok_and(|rel| self.ignores.get().is_ignored(&rel, true));
                    if ignored {
                        continue;
                    }
                    self.forget(&p);
                    if let Some(why) = self.add_tree(&p) {
                        self.unwatched(why);
                    }
                    // Made in it before its watch existed: look again now.
                    let hint = Hint {
                        path: p,
                        settle: false,
                    };
                    let _ = self.tx.send((self.wrap)(WatchMsg::Paths(vec![hint])));
                }
                Ctl::Gone(p) => self.forget(&p),
                Ctl::Rewatch => {
                    let root = self.root.clone();
                    let (wanted, unreadable) = self.wanted_under(&root);
                    let wanted: BTreeSet<PathBuf> = wanted.into_iter().collect();
                    let extra: Vec<PathBuf> = self.dirs.difference(&wanted).cloned().collect();
                    for d in extra {
                        let _ = self.watcher.unwatch(&d);
                        self.dirs.remove(&d);
                    }
                    let missing: Vec<PathBuf> = wanted.difference(&self.dirs).cloned().collect();
                    if let Some(why) = self.add(missing).or(unreadable) {
                        self.unwatched(why);
                    }
                    // Made meanwhile: the listing above may predate them.
                    let root = self.root.clone();
                    if let Some(why) = self.add_tree(&root) {
                        self.unwatched(why);
                    }
                }
            }
        }
    }
}

/// Starts watching `root`: every folder under it but `skip` (the state
/// folder) and those `ignores` excludes; hints go to `tx` as `wrap(msg)`.
/// When the inotify watch limit or an unreadable folder stops it part of
/// the way, the watcher is still returned (what it watches keeps working),
/// with why some folders are not watched. Also returns the tree as listed
/// while the watches were added (see [`crate::scan::walk`]): whatever
/// changes after a folder's listing is an event of its watch.
pub fn start<M: Send + 'static>(
    root: &Path,
    skip: &Path,
    ignores: SharedIgnores,
    tx: Sender<M>,
    wrap: fn(WatchMsg) -> M,
) -> notify::Result<(Watch, Option<String>, crate::scan::Walk)> {
    let (ctl_tx, ctl_rx) = mpsc::channel();
    let events_tx = tx.clone();
    let appeared = ctl_tx.clone();
    let skip_events = skip.to_path_buf();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let msg = match res {
            Ok(ev) if ev.need_rescan() => WatchMsg::Rescan,
            Ok(ev) => {
                let settle = match ev.kind {
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => false,
                    EventKind::Access(_) => return,
                    EventKind::Create(CreateKind::Folder) => false,
                    EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_)) => true,
                    EventKind::Modify(ModifyKind::Any) => true,
                    // Moved away with no new name seen (yet): perhaps into
                    // a folder made a moment ago whose watch the watch
                    // thread is still adding. Waiting lets the new name be
                    // found first, so peers rebuild it from the old one's
                    // blocks instead of fetching it. A rename seen whole
                    // (`Name(Both)`, which follows) makes it quick again.
                    EventKind::Modify(ModifyKind::Name(RenameMode::From)) => true,
                    _ => false,
                };
                let paths: Vec<PathBuf> = ev
                    .paths
                    .into_iter()
                    .filter(|p| !p.starts_with(&skip_events))
                    .collect();
                // New folders (made or renamed in) need watches of their
                // own; folders removed take theirs with them.
                let ctl: Option<fn(PathBuf) -> Ctl> = match ev.kind {
                    EventKind::Create(CreateKind::Folder | CreateKind::Any)
                    | EventKind::Modify(ModifyKind::Name(_)) => Some(Ctl::Appeared),
                    EventKind::Remove(RemoveKind::Folder) => Some(Ctl::Gone),
                    _ => None,
                };
                if let Some(make) = ctl {
                    for p in &paths {
                        let _ = appeared.send(make(p.clone()));
                    }
                }
                if paths.is_empty() {
                    return;
                }
                WatchMsg::Paths(
                    paths
                        .into_iter()
                        .map(|path| Hint { path, settle })
                        .collect(),
                )
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
        let _ = events_tx.send(wrap(msg));
    })?;
    let mut watched = Watched {
        watcher,
        dirs: BTreeSet::new(),
        root: root.to_path_buf(),
        skip: skip.to_path_buf(),
        ignores,
        tx,
        wrap,
        told: None,
    };
    if !std::fs::symlink_metadata(root).is_ok_and(|m| m.is_dir()) {
        return Err(notify::Error::generic("not a folder").add_path(root.to_path_buf()));
    }
    // One pass over the tree: each folder is watched, then listed (with a
    // stat of everything in it, for the first scan). A folder made in one
    // after its listing is an event of that folder's watch; one made
    // before is in the listing.
    let ignores = watched.ignores.get();
    let mut why = None;
    let mut at_limit = false;
    let walk = crate::scan::walk_with(root, root, skip, &ignores, |dir| {
        if at_limit {
            return;
        }
        match watched.add_one(dir.to_path_buf()) {
            Ok(()) => {}
            Err(Unwatchable::Limit(w)) => {
                at_limit = true;
                why = Some(w);
            }
            Err(Unwatchable::Other(w)) => {
                why.get_or_insert(w);
            }
        }
    });
    // A folder that cannot be listed (the synced folder itself included)
    // is not known to be empty: it is rescanned periodically.
    if let Some((p, e)) = walk.unlisted().next() {
        why.get_or_insert(format!("cannot watch every folder ({}: {e})", p.display()));
    }
    std::thread::Builder::new()
        .name("tandem-watch".into())
        .spawn(move || watched.run(ctl_rx))
        .map_err(notify::Error::io)?;
    Ok((Watch { ctl: ctl_tx }, why, walk))
}
