//! Kept versions in the UI: restoring one from the detail pane, after a
//! question since it replaces the file on every node ([`Confirm`]), and
//! what came of it. The pane lists them ([`super::detail`]); `:versions
//! PATH` opens the pane on a path the table no longer has, as a file
//! deleted everywhere has no row, and bringing one back is what versions
//! are most for.

use tandem_common::RelPath;
use tandem_common::display::{ago, human_size};
use tandem_common::proto::{KeptVersion, VersionRestoration};

use super::{AppState, Confirm, Effect, Level, Mode};

/// Why a kept version was not restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreError {
    /// The node no longer keeps it: its cleanup removed it meanwhile (by
    /// age or by size), or someone restored it already.
    Gone,
    /// Anything else, in words.
    Failed(String),
}

impl AppState {
    /// Asks before making the kept version `v` the current one again.
    pub(super) fn ask_restore_version(&mut self, v: KeptVersion) {
        let p = &v.path;
        let kept = u64::try_from(self.now_ns.saturating_sub(v.kept_ns)).unwrap_or(0);
        let current = self.current_is_kept(p, "a version", &v.node);
        let question = format!(
            "Restore {p} as kept on {} {} ({}, modified {}, {})? It becomes the current version on every node. {current}",
            v.node,
            ago(kept / 1_000_000_000),
            human_size(v.size),
            self.zone.format(v.mtime_ns, "%Y-%m-%d %H:%M:%S"),
            crate::versions::cause(&v),
        );
        self.mode = Mode::Confirm(Confirm {
            question,
            doing: format!("restoring {p} on {}…", v.node),
            yes: vec![Effect::RestoreVersion {
                path: v.path.clone(),
                node: v.node,
                id: v.id,
            }],
        });
    }

    /// A restore came back: what the node did, or why not, in the status
    /// line.
    pub(super) fn version_restored(
        &mut self,
        node: String,
        path: RelPath,
        result: Result<VersionRestoration, RestoreError>,
    ) {
        match result {
            Ok(done) => {
                self.set_status(Level::Ok, crate::versions::describe_restoration(&done));
                // The feed says so too; the table should not wait for it.
                self.schedule_list();
            }
            Err(RestoreError::Gone) => self.set_status(
                Level::Error,
                format!(
                    "{node} no longer keeps that version of {path}: it was cleaned up meanwhile (versions go by age and size) or restored already; :versions {path} shows what is kept now"
                ),
            ),
            Err(RestoreError::Failed(e)) => self.set_status(
                Level::Error,
                format!("cannot restore {path} from {node}: {e}"),
            ),
        }
    }
}
