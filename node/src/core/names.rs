//! Names that cannot coexist everywhere (the rules are [`crate::names`]'s).
//!
//! - On a file system that takes two spellings for one name (probed at
//!   start, or `--assume-fs`), a peer's path whose name, or a folder on its
//!   way, is another spelling of something here is not written: the engine
//!   is told ([`DiskFacts::OtherSpelling`]) and blocks it like anything else
//!   in the way, so it stays queued, shows as state `error` in `tandem list`
//!   and as a feed and log line, and is retried with backoff until one of
//!   the two is renamed. An upload (`tandem put`) of such a name is refused.
//! - Everywhere, the node looks for pairs of names among its own files that
//!   only differ in case or Unicode form: each new pair is logged and sent
//!   to the feed once, and `tandem nodes` shows a warning while any is left.
//!   The folders whose names changed are looked at (at most once a second);
//!   the whole index at start.

use std::collections::BTreeSet;

use super::*;
use crate::engine::DiskFacts;
use crate::names::{Clash, Folding, Lookup, Pair};

/// Log lines and feed events for new pairs, per look (the rest are counted).
const REPORT_LIMIT: usize = 100;
/// Folders looked at again at most this often while names keep changing.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// More folders changed than this: the whole index is looked at instead.
const DIRTY_LIMIT: usize = 1000;

/// What the core knows about names here.
pub struct Names {
    /// The spellings this node must not hold side by side: what its file
    /// system takes for one name (probed, or `--assume-fs`).
    pub folds: Folding,
    /// What the file system was seen to fold (the probe): a name it does
    /// not find is not there in any spelling it folds, so it need not be
    /// looked for in the folder's listing.
    pub fs_folds: Folding,
    /// Folders (`None`: the top) whose names changed since the last look.
    dirty: HashSet<Option<RelPath>>,
    /// Look at the whole index (at start, or when many folders changed).
    all_dirty: bool,
    /// Not before this.
    check_at: Instant,
    /// Pairs of names here that only differ in case or Unicode form.
    pairs: BTreeSet<Pair>,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            folds: Folding::EXACT,
            fs_folds: Folding::EXACT,
            dirty: HashSet::new(),
            all_dirty: true,
            check_at: Instant::now(),
            pairs: BTreeSet::new(),
        }
    }
}

impl Names {
    /// Notes that the name at `path` was added, changed or removed.
    pub(super) fn touched(&mut self, path: &RelPath) {
        if self.all_dirty {
            return;
        }
        let parent = path.parent();
        if !self.dirty.contains(&parent) {
            self.dirty.insert(parent);
            if self.dirty.len() > DIRTY_LIMIT {
                self.dirty.clear();
                self.all_dirty = true;
            }
        }
    }

    /// When folders are to be looked at, if any are.
    pub(super) fn due(&self) -> Option<Instant> {
        (self.all_dirty || !self.dirty.is_empty()).then_some(self.check_at)
    }

    /// The warning for `tandem nodes`, while pairs are here.
    pub(super) fn warning(&self) -> Option<String> {
        let first = self.pairs.first()?;
        let n = self.pairs.len();
        Some(format!(
            "{n} pair(s) of names here differ only in case or Unicode form (e.g. {} and {}): a case-insensitive or normalizing file system (macOS, Windows) cannot hold both; rename one of each pair (the log lists them)",
            first.a, first.b
        ))
    }
}

impl Core {
    /// Sets what this node's file system takes for one name.
    pub fn names(mut self, folds: Folding, fs_folds: Folding) -> Self {
        self.names.folds = folds;
        self.names.fs_folds = fs_folds;
        self
    }

    /// Another spelling of `p`, or of a folder on its way, that is on disk
    /// here when the file system takes it for the same name. Folders are
    /// followed down only while they are folders (never through a link).
    pub(super) fn other_spelling(&self, p: &RelPath) -> std::io::Result<Option<Clash>> {
        let folds = self.names.folds;
        if !folds.any() {
            return Ok(None);
        }
        let s = p.as_str();
        let mut dir = self.root.clone();
        let mut start = 0;
        loop {
            let end = s[start..].find('/').map_or(s.len(), |i| start + i);
            let (prefix, name) = (&s[..start], &s[start..end]);
            // Known here under this very spelling: the disk was seen to
            // hold it by that name.
            let known = RelPath::new(&s[..end])
                .ok()
                .and_then(|q| self.index.get(&q))
                .is_some_and(|r| !r.entry.deleted);
            if !known {
                let absent = |r: std::io::Result<std::fs::Metadata>| matches!(r, Err(e) if e.kind() == std::io::ErrorKind::NotFound);
                if folds.within(self.names.fs_folds)
                    && absent(std::fs::symlink_metadata(dir.join(name)))
                {
                    // The file system itself would have found any spelling.
                    return Ok(None);
                }
                let listing = match std::fs::read_dir(&dir) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                let mut here = Vec::new();
                for e in listing {
                    if let Ok(n) = e?.file_name().into_string() {
                        here.push(n);
                    }
                }
                match crate::names::lookup(name, here.iter().map(String::as_str), folds) {
                    Lookup::Absent => return Ok(None),
                    Lookup::Exact => {}
                    Lookup::Other(other) => {
                        let Some(how) = crate::names::difference(other, name) else {
                            return Ok(None);
                        };
                        return Ok(Some(Clash {
                            ours: format!("{prefix}{other}"),
                            theirs: s[..end].to_string(),
                            how,
                        }));
                    }
                }
            }
            if end == s.len() {
                return Ok(None);
            }
            dir.push(name);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                // Not a folder (or gone): the refresh that follows says so.
                _ => return Ok(None),
            }
            start = end + 1;
        }
    }

    /// What the disk shows at `p` for a peer's entry: another spelling in
    /// the way, or what [`Core::refresh`] finds. The spelling comes first:
    /// on a file system that folds names, a look at `p` would find the
    /// other spelling's file and take it for a local change at `p`.
    pub(super) fn disk_facts(&mut self, p: &RelPath) -> std::io::Result<DiskFacts> {
        match self.other_spelling(p)? {
            Some(c) => Ok(DiskFacts::OtherSpelling(c)),
            None => self.refresh(p),
        }
    }

    /// Looks for pairs of names that only differ in case or Unicode form in
    /// the folders whose names changed (all of them at start), when due.
    pub(super) fn check_names(&mut self) {
        let now = Instant::now();
        if self.names.due().is_none_or(|at| at > now) {
            return;
        }
        self.names.check_at = now + CHECK_EVERY;
        let found: BTreeSet<Pair> = if std::mem::take(&mut self.names.all_dirty) {
            self.names.dirty.clear();
            let paths = self.index.live_paths();
            let live = paths.iter().filter(|p| !self.ignores_indexed(p));
            let found: BTreeSet<Pair> = crate::names::collisions(live).into_iter().collect();
            self.names.pairs.retain(|p| found.contains(p));
            found
        } else {
            let dirty = std::mem::take(&mut self.names.dirty);
            let mut found = BTreeSet::new();
            for d in &dirty {
                let children = self.index.live_children(d.as_ref());
                let children = children.into_iter().filter(|p| !self.ignores_indexed(p));
                found.extend(crate::names::collisions(children));
            }
            self.names
                .pairs
                .retain(|p| !dirty.contains(&p.folder()) || found.contains(p));
            found
        };
        let new: Vec<Pair> = found
            .into_iter()
            .filter(|p| !self.names.pairs.contains(p))
            .collect();
        for (i, p) in new.iter().enumerate() {
            if i == REPORT_LIMIT {
                tracing::warn!(
                    "… and {} more pairs of names that differ only in case or Unicode form",
                    new.len() - REPORT_LIMIT
                );
                break;
            }
            tracing::warn!(
                "{} and {} differ {}: both are kept here, but a case-insensitive or normalizing file system (macOS, Windows) cannot hold both; rename one of them",
                p.a,
                p.b,
                p.how
            );
            self.io.events.emit(EventKind::NamesCollide {
                path: p.a.clone(),
                other: p.b.clone(),
                how: p.how,
            });
        }
        self.names.pairs.extend(new);
    }
}
