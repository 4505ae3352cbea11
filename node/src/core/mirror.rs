//! One-way mirrors (`tandem-node --mode`): what a send-only node declined
//! is pushed over the others' version on request (`tandem override`), and
//! what a receive-only node changed and never sent is thrown away on
//! request (`tandem revert`), kept as versions. The decisions themselves
//! are the engine's ([`crate::engine::Mode`]); this is carrying out the
//! two requests.

use super::*;
use crate::engine::Mode;
use tandem_common::proto::MirrorReport;

/// Which of the two requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorAction {
    /// Send-only: this node's version wins over what it declined.
    Override,
    /// Receive-only: this node's unsent changes go.
    Revert,
}

impl MirrorAction {
    fn needs(self) -> Mode {
        match self {
            MirrorAction::Override => Mode::SendOnly,
            MirrorAction::Revert => Mode::ReceiveOnly,
        }
    }

    fn name(self) -> &'static str {
        match self {
            MirrorAction::Override => "override",
            MirrorAction::Revert => "revert",
        }
    }
}

fn under(p: &RelPath, at: Option<&RelPath>) -> bool {
    at.is_none_or(|a| p == a || p.is_inside(a))
}

impl Core {
    /// Carries out `action` on the paths under `at` (all when `None`).
    pub(super) fn mirror(
        &mut self,
        action: MirrorAction,
        at: Option<&RelPath>,
        by: &str,
    ) -> Result<MirrorReport, ApiError> {
        if self.mode != action.needs() {
            return Err(ApiError::WrongMode {
                node: self.name.clone(),
                mode: self.mode.as_str().into(),
                request: action.name().into(),
                needed: action.needs().as_str().into(),
            });
        }
        let mut not_done = Vec::new();
        let paths = match action {
            MirrorAction::Override => self.override_declined(at, by, &mut not_done),
            MirrorAction::Revert => self.revert_unsent(at, by, &mut not_done),
        };
        self.flush();
        Ok(MirrorReport {
            node: self.name.clone(),
            count: paths.len() as u64,
            paths: paths.into_iter().take(MirrorReport::LISTED).collect(),
            not_done: not_done.into_iter().take(MirrorReport::LISTED).collect(),
        })
    }

    /// Makes this node's version of every declined path win: a new
    /// version of ours that has seen theirs (our content, or our absence).
    fn override_declined(
        &mut self,
        at: Option<&RelPath>,
        by: &str,
        not_done: &mut Vec<String>,
    ) -> Vec<RelPath> {
        let declined: Vec<(RelPath, VersionVector)> = self
            .needed
            .iter()
            .filter(|(p, n)| n.declined && under(p, at))
            .map(|(p, n)| (p.clone(), n.w.entry.version.clone()))
            .collect();
        let mut done = Vec::new();
        for (p, theirs) in declined {
            // The disk is the truth: what is here now is what is pushed.
            if let Err(e) = self.refresh(&p) {
                tracing::warn!("cannot override {p}: cannot read it here ({e}); left as it is");
                not_done.push(format!("{p}: cannot read it here ({e})"));
                continue;
            }
            self.index.override_with(&p, &theirs);
            self.drop_need(&p);
            tracing::info!("{p}: this node's version is pushed over the others' ({by})");
            done.push(p);
        }
        done
    }

    /// Throws away the changes made here and never sent: files and links
    /// go to the versions folder, folders made here are removed when
    /// empty, and the index forgets them; then every peer sends its index
    /// again, so the cluster's version of each comes back.
    fn revert_unsent(
        &mut self,
        at: Option<&RelPath>,
        by: &str,
        not_done: &mut Vec<String>,
    ) -> Vec<RelPath> {
        // What was changed a moment ago may not be indexed yet.
        match at {
            Some(a) if self.index.get(a).is_some_and(|r| r.entry.is_live_dir()) => {
                self.reconcile(Some(a));
            }
            Some(a) => {
                if let Err(e) = self.refresh(a) {
                    tracing::warn!("cannot read {a} before reverting it: {e}");
                }
            }
            None => {
                self.reconcile(None);
            }
        }
        let mut unsent: Vec<FileEntry> = self
            .index
            .records()
            .filter(|r| self.index.is_unsent(&r.entry) && under(&r.entry.path, at))
            .map(|r| r.entry.clone())
            .collect();
        // Deepest first: a folder made here is empty when its turn comes.
        unsent.sort_by(|a, b| b.path.cmp(&a.path));
        let me = self.index.me();
        let mut done = Vec::new();
        for e in unsent {
            let full = e.path.to_disk(&self.root);
            let gone = if e.deleted {
                Ok(())
            } else if e.kind == EntryKind::Dir {
                match std::fs::remove_dir(&full) {
                    Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
                    _ => Ok(()),
                }
            } else {
                self.remove_ours(me, &e)
            };
            if let Err(err) = gone {
                tracing::warn!("cannot revert {}: {err}; left as it is", e.path);
                not_done.push(format!("{}: {err}", e.path));
                continue;
            }
            self.index.forget(&e.path);
            tracing::info!("{}: the change made here is thrown away ({by})", e.path);
            done.push(e.path);
        }
        if !done.is_empty() {
            self.ask_everything_again();
        }
        done
    }
}
