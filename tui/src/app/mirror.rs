//! One-way mirrors in the UI: `:override [PATH]` on a send-only node pushes
//! its version over what it declined, `:revert [PATH]` on a receive-only
//! node throws away the changes made there. Both change what others (or
//! the node's user) have, so each asks first ([`Confirm`]); the node says
//! whether its mode allows it.

use tandem_common::RelPath;
use tandem_common::proto::MirrorReport;

use super::{AppState, Confirm, Conn, Effect, Level, Mode};

impl AppState {
    /// Asks before `:override` (`revert` false) or `:revert` on the
    /// connected node, under `path` or everywhere.
    pub(super) fn ask_mirror(&mut self, revert: bool, path: Option<RelPath>) -> Vec<Effect> {
        let Conn::Up { name } = &self.conn else {
            return self.not_connected();
        };
        let under = path
            .as_ref()
            .map_or(String::new(), |p| format!(" under {p}"));
        let question = if revert {
            format!(
                "Throw away the changes made on {name}{under}? They are kept in its versions folder, and the cluster's version comes back."
            )
        } else {
            format!(
                "Push {name}'s version over every change of the others it did not take{under}? Its files win on every node; files only the others have are deleted there (kept as versions)."
            )
        };
        self.mode = Mode::Confirm(Confirm {
            question,
            doing: if revert {
                format!("reverting on {name}…")
            } else {
                format!("overriding from {name}…")
            },
            yes: vec![Effect::Mirror { revert, path }],
        });
        Vec::new()
    }

    /// `:override` or `:revert` came back.
    pub(super) fn mirrored(&mut self, revert: bool, result: Result<MirrorReport, String>) {
        match result {
            Ok(r) if !r.not_done.is_empty() => self.set_status(
                Level::Error,
                format!(
                    "{} path(s) done on {}; {} left as they were: {}",
                    r.count,
                    r.node,
                    r.not_done.len(),
                    r.not_done.join("; ")
                ),
            ),
            Ok(r) => {
                let did = if revert {
                    "thrown away (kept as versions); the cluster's version comes back"
                } else {
                    "pushed over the others' version"
                };
                self.set_status(
                    Level::Ok,
                    format!("{} path(s) on {} {did}", r.count, r.node),
                );
                self.schedule_list();
            }
            Err(e) => self.set_status(
                Level::Error,
                format!("cannot {}: {e}", if revert { "revert" } else { "override" }),
            ),
        }
    }
}
