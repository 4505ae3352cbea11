//! Events in words: the sentences and kind names that the CLI's `feed`
//! and the UI's feed both show, so the two always read alike.

use tandem_common::RelPath;
use tandem_common::display::human_size;
use tandem_common::proto::{EventKind, HeldKind};

/// A held change's kind as one word (`held --json` and the feed).
pub fn kind_word(k: HeldKind) -> &'static str {
    match k {
        HeldKind::Modify => "modify",
        HeldKind::Delete => "delete",
    }
}

/// One event in words (without time and node), for the feed and the UI.
pub fn describe_event(e: &EventKind) -> String {
    match e {
        EventKind::Added { path, size } => format!("added {path} ({})", human_size(*size)),
        EventKind::Changed { path, size } => format!("changed {path} ({})", human_size(*size)),
        EventKind::Deleted { path, by } => format!("deleted {path} (deleted on {by})"),
        EventKind::Transferred {
            path,
            from,
            to,
            size,
            sent,
            millis,
        } => format!(
            "{path} {from} → {to}: {} in {millis} ms ({} sent)",
            human_size(*size),
            human_size(*sent)
        ),
        EventKind::Conflict {
            path,
            winner,
            loser,
            kept_as,
        } => format!("conflict on {path}: {winner}'s version wins; {loser}'s kept as {kept_as}"),
        EventKind::Locked { path, owner, via } => {
            format!("{path} locked by {owner} (through {via})")
        }
        EventKind::Unlocked { path, by, forced } => {
            if *forced {
                format!("{path} unlocked by force by {by}")
            } else {
                format!("{path} unlocked by {by}")
            }
        }
        EventKind::Held { path, from, kind } => {
            format!("held {} of {path} from {from} (locked)", kind_word(*kind))
        }
        EventKind::Released { path, from, kind } => match kind {
            HeldKind::Delete => format!("released held DELETE of {path} from {from}"),
            HeldKind::Modify => format!("released held change of {path} from {from}"),
        },
        EventKind::NodeUp { name } => format!("node {name} is up"),
        EventKind::NodeDown { name } => format!("node {name} is down"),
        EventKind::ClientConnected { name, addr } => format!("client {name} connected from {addr}"),
        EventKind::ClientDisconnected { name, addr } => {
            format!("client {name} ({addr}) disconnected")
        }
        EventKind::ApplyFailed { path, from, error } => {
            format!("cannot apply {path} (from {from}): {error}; retrying")
        }
        EventKind::ApplyRecovered { path } => format!("{path} applied after earlier failures"),
        EventKind::Unwatched {
            reason,
            rescan_secs,
        } => format!("{reason}: some folders are not watched; rescanning every {rescan_secs}s"),
        EventKind::ConflictRestored {
            path,
            by,
            replaced_as,
        } => match replaced_as {
            Some(r) => format!(
                "{path} restored from a conflict copy by {by}; the version it replaced is kept as {r}"
            ),
            None => format!("{path} restored from a conflict copy by {by}"),
        },
        EventKind::ConflictDiscarded { id, by } => {
            format!("conflict copy {id} discarded by {by}")
        }
        EventKind::VersionRestored { path, by } => {
            format!("{path} restored from a kept version by {by}")
        }
        EventKind::NamesCollide { path, other, how } => format!(
            "{path} and {other} differ {how}: both are kept here, but a case-insensitive or normalizing file system (macOS, Windows) cannot hold both; rename one"
        ),
    }
}

/// The file an event is about, if any.
pub fn event_path(e: &EventKind) -> Option<&RelPath> {
    match e {
        EventKind::Added { path, .. }
        | EventKind::Changed { path, .. }
        | EventKind::Deleted { path, .. }
        | EventKind::Transferred { path, .. }
        | EventKind::Conflict { path, .. }
        | EventKind::Locked { path, .. }
        | EventKind::Unlocked { path, .. }
        | EventKind::Held { path, .. }
        | EventKind::Released { path, .. }
        | EventKind::ApplyFailed { path, .. }
        | EventKind::ConflictRestored { path, .. }
        | EventKind::VersionRestored { path, .. }
        | EventKind::NamesCollide { path, .. }
        | EventKind::ApplyRecovered { path } => Some(path),
        _ => None,
    }
}

/// Short name of an event's kind, for JSON and colours.
pub fn event_kind_name(e: &EventKind) -> &'static str {
    match e {
        EventKind::Added { .. } => "added",
        EventKind::Changed { .. } => "changed",
        EventKind::Deleted { .. } => "deleted",
        EventKind::Transferred { .. } => "transferred",
        EventKind::Conflict { .. } => "conflict",
        EventKind::Locked { .. } => "locked",
        EventKind::Unlocked { .. } => "unlocked",
        EventKind::Held { .. } => "held",
        EventKind::Released { .. } => "released",
        EventKind::NodeUp { .. } => "node_up",
        EventKind::NodeDown { .. } => "node_down",
        EventKind::ClientConnected { .. } => "client_connected",
        EventKind::ClientDisconnected { .. } => "client_disconnected",
        EventKind::ApplyFailed { .. } => "apply_failed",
        EventKind::ApplyRecovered { .. } => "apply_recovered",
        EventKind::Unwatched { .. } => "unwatched",
        EventKind::ConflictRestored { .. } => "conflict_restored",
        EventKind::ConflictDiscarded { .. } => "conflict_discarded",
        EventKind::VersionRestored { .. } => "version_restored",
        EventKind::NamesCollide { .. } => "names_collide",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_common::RelPath;
    use tandem_common::proto::NameDifference;

    #[test]
    fn names_that_collide_elsewhere_in_words() {
        let e = EventKind::NamesCollide {
            path: RelPath::new("Notes.txt").unwrap(),
            other: RelPath::new("notes.txt").unwrap(),
            how: NameDifference::Case,
        };
        assert_eq!(
            describe_event(&e),
            "Notes.txt and notes.txt differ only in case: both are kept here, but a case-insensitive or normalizing file system (macOS, Windows) cannot hold both; rename one"
        );
        assert_eq!(event_kind_name(&e), "names_collide");
    }
}
