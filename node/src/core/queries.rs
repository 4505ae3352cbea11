//! Read-only answers about this node's files: the table for clients and
//! the per-node summaries that merged tables are built from. What is
//! ignored here is in none of them.

use super::*;

impl Core {
    /// This node's view of one path (see [`Core::summary`]).
    pub(super) fn summary_of(&self, path: &RelPath) -> Option<FileSummary> {
        if self.is_ignored(path, false) {
            return None;
        }
        match self.index.get(path).filter(|r| listed(&r.entry)) {
            Some(r) => Some(self.summarise(&r.entry, true)),
            None => self
                .needed
                .get(path)
                .map(|n| self.summarise(&n.w.entry, false)),
        }
    }

    /// A page of this node's files for a merged table, sorted by path:
    /// the first `limit` after `after` of its live files and of the files
    /// it is fetching but does not have yet, and whether more follow. A
    /// page at a time, so a table of a million files is never held whole.
    pub(super) fn summary_page(
        &self,
        after: Option<&RelPath>,
        limit: usize,
    ) -> (Vec<FileSummary>, bool) {
        use std::ops::Bound;
        // One more than a page of what is here: the one after the page
        // bounds which wanted files can be in it, so each page looks only
        // at its own part of the queue (a queue of a million changes to
        // files held here would otherwise be looked through for every page).
        let have: Vec<crate::index::Record> = self
            .index
            .records_after(after)
            .filter(|r| listed(&r.entry) && !self.is_ignored(&r.entry.path, false))
            .take(limit.saturating_add(1))
            .collect();
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let to = have
            .get(limit)
            .map_or(Bound::Unbounded, |r| Bound::Excluded(&r.entry.path));
        let mut wanted = self
            .needed
            .range::<RelPath, _>((from, to))
            .filter(|(p, n)| {
                listed(&n.w.entry)
                    && !self.is_ignored(p, false)
                    && self.index.get(p).is_none_or(|r| !listed(&r.entry))
            })
            .peekable();
        let mut have = have.iter().peekable();
        let mut out = Vec::new();
        loop {
            // Both sources are sorted and never hold the same path.
            let take_have = match (have.peek(), wanted.peek()) {
                (None, None) => return (out, false),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(r), Some((p, _))) => r.entry.path < **p,
            };
            if out.len() == limit {
                return (out, true);
            }
            if take_have {
                let r = have.next().expect("peeked");
                out.push(self.summarise(&r.entry, true));
            } else {
                let (_, n) = wanted.next().expect("peeked");
                out.push(self.summarise(&n.w.entry, false));
            }
        }
    }

    /// One file for a merged table: `present` when it is on disk here, else
    /// the version being fetched.
    pub(super) fn summarise(&self, e: &FileEntry, present: bool) -> FileSummary {
        FileSummary {
            link: e.live_link().map(str::to_string),
            path: e.path.clone(),
            size: e.size,
            mtime_ns: e.mtime_ns,
            hash: e.hash,
            version: e.version.clone(),
            locked_by: present
                .then(|| self.locks.get(&e.path).map(|l| l.info.owner_name.clone()))
                .flatten(),
            held: if present {
                self.held.count(&e.path) as u32
            } else {
                0
            },
            syncing: (!present || self.needed.contains_key(&e.path)) && !self.declined(&e.path),
            present,
            error: self.needed.get(&e.path).and_then(|n| n.error.clone()),
            differs: self.declined(&e.path) || (present && self.index.is_unsent(e)),
        }
    }

    /// This send-only node declined a peer's version of `path`.
    fn declined(&self, path: &RelPath) -> bool {
        self.needed.get(path).is_some_and(|n| n.declined)
    }

    /// Totals and warnings for `tandem nodes`.
    pub(super) fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for (path, size) in self.index.live_files() {
            if !self.is_ignored(path, false) {
                c.files += 1;
                c.bytes = c.bytes.saturating_add(size);
            }
        }
        // Changes that keep failing are warnings (below), not progress.
        for n in self
            .needed
            .values()
            .filter(|n| n.error.is_none() && !n.declined)
        {
            c.pending_files += 1;
            if n.w.entry.is_live_file() {
                c.pending_bytes = c.pending_bytes.saturating_add(n.w.entry.size);
            }
        }
        let failing = self.needed.values().filter(|n| n.error.is_some()).count();
        if failing > 0 {
            c.warnings.push(format!(
                "{failing} change(s) from peers cannot be applied here (state \"error\" in tandem list); retrying"
            ));
        }
        if !self.io_retries.is_empty() {
            c.warnings.push(format!(
                "{} path(s) cannot be read here; nothing is changed for them, retrying",
                self.io_retries.len()
            ));
        }
        c.warnings.extend(self.names.warning());
        let declined = self.needed.values().filter(|n| n.declined).count();
        if declined > 0 {
            c.warnings.push(format!(
                "send-only: {declined} path(s) differ from the other nodes' version (state \"differs\" in tandem list); `tandem override` pushes this node's version"
            ));
        }
        if self.mode == crate::engine::Mode::ReceiveOnly {
            let unsent = self
                .index
                .records()
                .filter(|r| self.index.is_unsent(&r.entry))
                .count();
            if unsent > 0 {
                c.warnings.push(format!(
                    "receive-only: {unsent} change(s) made here are not sent (state \"differs\" in tandem list); `tandem revert` throws them away, keeping them as versions"
                ));
            }
        }
        if let Some(why) = &self.unwatched {
            c.warnings.push(format!(
                "{why}: some folders are not watched, the tree is rescanned every {}s",
                UNWATCHED_RESCAN.as_secs()
            ));
        }
        c
    }
}

/// What the file tables list: live files and links (folders are implied by
/// their files).
fn listed(e: &FileEntry) -> bool {
    e.is_live_file() || e.live_link().is_some()
}
