//! The Conflicts view's state: every node's kept conflict copies, and
//! restoring or discarding one — each after a question, since both change
//! what other people see ([`Confirm`]).

use tandem_common::RelPath;
use tandem_common::display::human_size;
use tandem_common::proto::{ConflictAction, ConflictCopy, ConflictResolution};

use super::{AppState, Confirm, Effect, Level, Mode, View, Wanted};

impl AppState {
    /// The selected conflict copy, if the list has one.
    pub fn selected_conflict(&self) -> Option<&ConflictCopy> {
        self.conflicts
            .as_ref()
            .and_then(|(v, _)| v.get(self.conflicts_sel))
    }

    /// Asks where to fetch the conflict copy `c` to.
    pub(super) fn ask_fetch_copy(&mut self, c: &ConflictCopy) {
        match Wanted::copy(c) {
            Some(what) => {
                self.mode = Mode::FetchPrompt {
                    what,
                    input: self.fetch_folder().display().to_string(),
                }
            }
            None => self.set_status(
                Level::Error,
                format!(
                    "{} named the copy {:?}, which cannot be fetched",
                    c.node, c.id
                ),
            ),
        }
    }

    /// Rows in the conflict list.
    pub(super) fn conflicts_len(&self) -> usize {
        self.conflicts.as_ref().map_or(0, |(v, _)| v.len())
    }

    pub(super) fn conflicts_loaded(&mut self, r: Result<(Vec<ConflictCopy>, Vec<String>), String>) {
        self.conflicts_refresh.answered();
        match r {
            Ok(list) => {
                self.conflicts_sel = self.conflicts_sel.min(list.0.len().saturating_sub(1));
                self.conflicts = Some(list);
                self.conflicts_error = None;
            }
            Err(e) => {
                if self.conflicts_error.as_deref() != Some(e.as_str())
                    && self.view == View::Conflicts
                {
                    self.set_status(Level::Error, format!("conflicts: {e}"));
                }
                self.conflicts_error = Some(e);
            }
        }
    }

    pub(super) fn conflict_resolved(
        &mut self,
        r: Result<ConflictResolution, String>,
        fx: &mut Vec<Effect>,
    ) {
        match r {
            Ok(done) => {
                self.set_status(Level::Ok, crate::conflicts::describe_resolution(&done));
                // The list changed (a copy gone, maybe a new one kept); a
                // request under way may predate it, the next one will not.
                self.refresh_conflicts(fx);
            }
            Err(e) => self.set_status(Level::Error, e),
        }
    }

    /// Asks for the conflict list unless a request is under way.
    pub(super) fn refresh_conflicts(&mut self, fx: &mut Vec<Effect>) {
        if self.is_up() && self.conflicts_refresh.stale(self.now_ns, true) {
            self.conflicts_refresh.start(self.now_ns);
            fx.push(Effect::RefreshConflicts);
        }
    }

    /// Asks before restoring or discarding the selected conflict copy.
    pub(super) fn ask_resolve(&mut self, action: ConflictAction) {
        match self.selected_conflict().cloned() {
            Some(c) => self.ask_resolve_copy(c, action),
            None => self.set_status(Level::Error, "no conflict copy selected"),
        }
    }

    /// What becomes of the current `p` when a kept file (a conflict copy,
    /// a version) on `node` replaces it, for the question before: it is
    /// kept there `as` a copy or a version in turn, or there is none.
    pub(super) fn current_is_kept(&self, p: &RelPath, kept_as: &str, node: &str) -> String {
        match self.files.get(p.as_str()) {
            Some(f) => format!(
                "The current {p} ({}, modified {}) is kept as {kept_as} on {node}.",
                human_size(f.size),
                self.zone.format(f.mtime_ns, "%Y-%m-%d %H:%M:%S"),
            ),
            None => format!("There is no current {p}: it comes back."),
        }
    }

    /// Asks before restoring or discarding the conflict copy `c`.
    pub(super) fn ask_resolve_copy(&mut self, c: ConflictCopy, action: ConflictAction) {
        let version = format!(
            "{}'s version ({}, modified {})",
            if c.author.is_empty() { "?" } else { &c.author },
            human_size(c.size),
            self.zone.format(c.mtime_ns, "%Y-%m-%d %H:%M:%S")
        );
        let (question, doing) = match (action, &c.path) {
            (ConflictAction::Restore, None) => {
                self.set_status(
                    Level::Error,
                    format!(
                        "{} does not say which file it is a version of; copy it by hand from .tandem/conflicts/ on {}",
                        c.id, c.node
                    ),
                );
                return;
            }
            (ConflictAction::Restore, Some(p)) => {
                let current = self.current_is_kept(p, "a conflict copy", &c.node);
                (
                    format!(
                        "Restore {p} from {version}, kept on {}? It becomes the current version on every node. {current}",
                        c.node
                    ),
                    format!("restoring {p} on {}…", c.node),
                )
            }
            (ConflictAction::Discard, _) => (
                format!(
                    "Delete the conflict copy {} on {} — {version} — for good?",
                    c.id, c.node
                ),
                format!("deleting the conflict copy {} on {}…", c.id, c.node),
            ),
        };
        self.mode = Mode::Confirm(Confirm {
            question,
            doing,
            yes: vec![Effect::ResolveConflict {
                node: c.node,
                id: c.id,
                action,
            }],
        });
    }
}
